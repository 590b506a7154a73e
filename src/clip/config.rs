//! Model sizes. Every number comes from a config file or a named preset; nothing is inferred from a name
//! once a config is loaded.

use serde::{Deserialize, Serialize};

/// The MLP non-linearity. OpenAI checkpoints were trained with QuickGELU, OpenCLIP/LAION ones with GELU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    QuickGelu,
    Gelu,
}

impl Activation {
    pub fn from_hf_name(name: &str) -> Option<Self> {
        match name {
            "quick_gelu" => Some(Self::QuickGelu),
            "gelu" | "gelu_new" | "gelu_pytorch_tanh" => Some(Self::Gelu),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    /// The resolution the checkpoint was trained at; its positional grid is `image_size / patch_size`.
    pub image_size: usize,
    pub patch_size: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp_dim: usize,
    pub activation: Activation,
    pub ln_eps: f64,
}

impl VisionConfig {
    pub fn base_grid(&self) -> usize {
        self.image_size / self.patch_size
    }
    pub fn head_dim(&self) -> usize {
        self.width / self.heads
    }

    /// Parameters of the image tower projecting to `embed_dim`.
    pub fn parameter_count(&self, embed_dim: usize) -> usize {
        let (c, f, p, g0) = (self.width, self.mlp_dim, self.patch_size, self.base_grid());
        let per_layer =
            2 * c + (3 * c * c + 3 * c) + (c * c + c) + 2 * c + (c * f + f) + (f * c + c);
        c * 3 * p * p
            + c
            + (g0 * g0 + 1) * c
            + 2 * c
            + self.layers * per_layer
            + 2 * c
            + c * embed_dim
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    pub context_length: usize,
    pub vocab_size: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp_dim: usize,
    pub activation: Activation,
    pub ln_eps: f64,
}

/// Pixel normalisation applied after scaling to [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

pub const OPENAI_NORMALIZATION: Normalization = Normalization {
    mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
    std: [0.268_629_54, 0.261_302_58, 0.275_777_1],
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    pub embed_dim: usize,
    pub vision: VisionConfig,
    pub text: TextConfig,
    pub normalization: Normalization,
}

/// Named architectures: the sizes of the published checkpoints, used for `random:<arch>` models and to
/// describe what `weights fetch` downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    VitB32,
    VitB16,
    VitL14,
    VitH14,
    /// A few-kilobyte model for tests: grid 4x4 of 8-pixel patches at its base size of 32.
    Tiny,
}

impl Arch {
    pub const ALL: [Arch; 5] = [
        Arch::VitB32,
        Arch::VitB16,
        Arch::VitL14,
        Arch::VitH14,
        Arch::Tiny,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Arch::VitB32 => "vit-b-32",
            Arch::VitB16 => "vit-b-16",
            Arch::VitL14 => "vit-l-14",
            Arch::VitH14 => "vit-h-14",
            Arch::Tiny => "tiny",
        }
    }

    pub fn parse(name: &str) -> Option<Arch> {
        let norm = name.to_ascii_lowercase().replace(['_', '/'], "-");
        Arch::ALL.into_iter().find(|a| a.name() == norm)
    }

    pub fn config(self) -> ClipConfig {
        let text = |width: usize, heads: usize, layers: usize, act: Activation| TextConfig {
            context_length: 77,
            vocab_size: 49408,
            width,
            layers,
            heads,
            mlp_dim: 4 * width,
            activation: act,
            ln_eps: 1e-5,
        };
        let vision =
            |size: usize, patch: usize, width: usize, layers: usize, head_width: usize, act| {
                VisionConfig {
                    image_size: size,
                    patch_size: patch,
                    width,
                    layers,
                    heads: width / head_width,
                    mlp_dim: 4 * width,
                    activation: act,
                    ln_eps: 1e-5,
                }
            };
        let q = Activation::QuickGelu;
        match self {
            Arch::VitB32 => ClipConfig {
                embed_dim: 512,
                vision: vision(224, 32, 768, 12, 64, q),
                text: text(512, 8, 12, q),
                normalization: OPENAI_NORMALIZATION,
            },
            Arch::VitB16 => ClipConfig {
                embed_dim: 512,
                vision: vision(224, 16, 768, 12, 64, q),
                text: text(512, 8, 12, q),
                normalization: OPENAI_NORMALIZATION,
            },
            Arch::VitL14 => ClipConfig {
                embed_dim: 768,
                vision: vision(224, 14, 1024, 24, 64, q),
                text: text(768, 12, 12, q),
                normalization: OPENAI_NORMALIZATION,
            },
            Arch::VitH14 => ClipConfig {
                embed_dim: 1024,
                vision: vision(224, 14, 1280, 32, 80, Activation::Gelu),
                text: text(1024, 16, 24, Activation::Gelu),
                normalization: OPENAI_NORMALIZATION,
            },
            Arch::Tiny => ClipConfig {
                embed_dim: 32,
                vision: vision(32, 8, 64, 2, 16, q),
                text: TextConfig {
                    context_length: 77,
                    vocab_size: 49408,
                    width: 16,
                    layers: 2,
                    heads: 2,
                    mlp_dim: 64,
                    activation: q,
                    ln_eps: 1e-5,
                },
                normalization: OPENAI_NORMALIZATION,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_round_trip_and_accept_common_spellings() {
        for a in Arch::ALL {
            assert_eq!(Arch::parse(a.name()), Some(a));
        }
        assert_eq!(Arch::parse("ViT-B/16"), Some(Arch::VitB16));
        assert_eq!(Arch::parse("ViT_L_14"), Some(Arch::VitL14));
        assert_eq!(Arch::parse("vit-x-1"), None);
    }

    #[test]
    fn presets_have_whole_heads_and_grids() {
        for a in Arch::ALL {
            let c = a.config();
            assert_eq!(c.vision.width % c.vision.heads, 0, "{}", a.name());
            assert_eq!(c.vision.image_size % c.vision.patch_size, 0, "{}", a.name());
            assert_eq!(c.text.width % c.text.heads, 0, "{}", a.name());
        }
        assert_eq!(Arch::VitH14.config().vision.heads, 16);
    }
}
