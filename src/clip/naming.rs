//! The two checkpoint layouts we read: Hugging Face `CLIPModel` and OpenCLIP state dicts.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `openai/clip-vit-base-patch16` style: `vision_model.encoder.layers.N.self_attn.q_proj...`.
    Hf,
    /// OpenCLIP state dict: `visual.transformer.resblocks.N.attn.in_proj_weight...`.
    OpenClip,
}

pub(crate) struct VisionKeys {
    pub patch_embedding: &'static str,
    pub class_embedding: &'static str,
    pub positional_embedding: &'static str,
    pub ln_pre: &'static str,
    pub blocks: &'static str,
    pub ln_post: &'static str,
}

pub(crate) struct TextKeys {
    pub token_embedding: &'static str,
    pub positional_embedding: &'static str,
    pub blocks: &'static str,
    pub ln_final: &'static str,
}

impl Naming {
    pub(crate) fn vision(self) -> VisionKeys {
        match self {
            Naming::OpenClip => VisionKeys {
                patch_embedding: "visual.conv1.weight",
                class_embedding: "visual.class_embedding",
                positional_embedding: "visual.positional_embedding",
                ln_pre: "visual.ln_pre",
                blocks: "visual.transformer.resblocks",
                ln_post: "visual.ln_post",
            },
            Naming::Hf => VisionKeys {
                patch_embedding: "vision_model.embeddings.patch_embedding.weight",
                class_embedding: "vision_model.embeddings.class_embedding",
                positional_embedding: "vision_model.embeddings.position_embedding.weight",
                ln_pre: "vision_model.pre_layrnorm",
                blocks: "vision_model.encoder.layers",
                ln_post: "vision_model.post_layernorm",
            },
        }
    }

    pub(crate) fn text(self) -> TextKeys {
        match self {
            Naming::OpenClip => TextKeys {
                token_embedding: "token_embedding.weight",
                positional_embedding: "positional_embedding",
                blocks: "transformer.resblocks",
                ln_final: "ln_final",
            },
            Naming::Hf => TextKeys {
                token_embedding: "text_model.embeddings.token_embedding.weight",
                positional_embedding: "text_model.embeddings.position_embedding.weight",
                blocks: "text_model.encoder.layers",
                ln_final: "text_model.final_layer_norm",
            },
        }
    }
}
