//! Loading real layouts and failing clearly on broken ones.

use crate::common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use common::*;
use regionseek::clip::{ClipModel, ModelSource};

fn tiny_tensors() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(tiny_dir().join("open_clip_model.safetensors"), &Device::Cpu)
        .unwrap()
}

fn openclip_dir_with(tensors: &HashMap<String, Tensor>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        tiny_dir().join("open_clip_config.json"),
        dir.path().join("open_clip_config.json"),
    )
    .unwrap();
    candle_core::safetensors::save(tensors, dir.path().join("open_clip_model.safetensors"))
        .unwrap();
    dir
}

fn load_err(dir: &std::path::Path) -> String {
    match ClipModel::load(&ModelSource::Dir(dir.to_path_buf()), &Device::Cpu) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_safetensors_is_one_clear_line_naming_the_file() {
    let dir = openclip_dir_with(&tiny_tensors());
    let file = dir.path().join("open_clip_model.safetensors");
    std::fs::write(&file, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all").unwrap();
    let msg = load_err(dir.path());
    eprintln!("{msg}");
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(msg.contains("not a valid safetensors file"), "{msg}");
    assert_eq!(msg.lines().count(), 1, "{msg}");
}

#[test]
fn truncated_safetensors_is_reported_not_panicking() {
    let dir = openclip_dir_with(&tiny_tensors());
    let file = dir.path().join("open_clip_model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let msg = load_err(dir.path());
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert_eq!(msg.lines().count(), 1, "{msg}");
}

#[test]
fn missing_tensor_is_named() {
    let mut t = tiny_tensors();
    t.remove("visual.ln_post.weight");
    let dir = openclip_dir_with(&t);
    let msg = load_err(dir.path());
    eprintln!("{msg}");
    assert!(msg.contains("open_clip_model.safetensors"), "{msg}");
    assert!(msg.contains("visual.ln_post.weight"), "{msg}");
    assert_eq!(msg.lines().count(), 1, "{msg}");
}

#[test]
fn wrong_shape_is_named() {
    let mut t = tiny_tensors();
    t.insert(
        "visual.proj".into(),
        Tensor::zeros((64, 31), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = openclip_dir_with(&t);
    let msg = load_err(dir.path());
    eprintln!("{msg}");
    assert!(msg.contains("visual.proj"), "{msg}");
}

#[test]
fn directory_without_a_model_says_what_it_expects() {
    let dir = tempfile::tempdir().unwrap();
    let msg = load_err(dir.path());
    assert!(
        msg.contains("open_clip_config.json") && msg.contains("config.json"),
        "{msg}"
    );
    let msg = load_err(&dir.path().join("nope"));
    assert!(msg.contains("does not exist"), "{msg}");
}

/// The tiny OpenCLIP checkpoint rewritten with Hugging Face CLIPModel names must give the same outputs.
#[test]
fn hugging_face_layout_loads_to_the_same_model() {
    let oc = tiny_tensors();
    let get = |k: &str| oc[k].clone();
    let mut hf: HashMap<String, Tensor> = HashMap::new();
    let mut block = |src: &str, dst: &str, width: usize| {
        let w = get(&format!("{src}.attn.in_proj_weight"));
        let b = get(&format!("{src}.attn.in_proj_bias"));
        for (i, n) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
            hf.insert(
                format!("{dst}.self_attn.{n}.weight"),
                w.narrow(0, i * width, width).unwrap().contiguous().unwrap(),
            );
            hf.insert(
                format!("{dst}.self_attn.{n}.bias"),
                b.narrow(0, i * width, width).unwrap().contiguous().unwrap(),
            );
        }
        for (s, d) in [
            ("attn.out_proj", "self_attn.out_proj"),
            ("ln_1", "layer_norm1"),
            ("ln_2", "layer_norm2"),
            ("mlp.c_fc", "mlp.fc1"),
            ("mlp.c_proj", "mlp.fc2"),
        ] {
            for p in ["weight", "bias"] {
                hf.insert(format!("{dst}.{d}.{p}"), get(&format!("{src}.{s}.{p}")));
            }
        }
    };
    for i in 0..2 {
        block(
            &format!("visual.transformer.resblocks.{i}"),
            &format!("vision_model.encoder.layers.{i}"),
            64,
        );
        block(
            &format!("transformer.resblocks.{i}"),
            &format!("text_model.encoder.layers.{i}"),
            16,
        );
    }
    let mut put = |dst: &str, t: Tensor| {
        hf.insert(dst.to_string(), t.contiguous().unwrap());
    };
    put(
        "vision_model.embeddings.patch_embedding.weight",
        get("visual.conv1.weight"),
    );
    put(
        "vision_model.embeddings.class_embedding",
        get("visual.class_embedding"),
    );
    put(
        "vision_model.embeddings.position_embedding.weight",
        get("visual.positional_embedding"),
    );
    for p in ["weight", "bias"] {
        put(
            &format!("vision_model.pre_layrnorm.{p}"),
            get(&format!("visual.ln_pre.{p}")),
        );
        put(
            &format!("vision_model.post_layernorm.{p}"),
            get(&format!("visual.ln_post.{p}")),
        );
        put(
            &format!("text_model.final_layer_norm.{p}"),
            get(&format!("ln_final.{p}")),
        );
    }
    put("visual_projection.weight", get("visual.proj").t().unwrap());
    put(
        "text_projection.weight",
        get("text_projection").t().unwrap(),
    );
    put(
        "text_model.embeddings.token_embedding.weight",
        get("token_embedding.weight"),
    );
    put(
        "text_model.embeddings.position_embedding.weight",
        get("positional_embedding"),
    );
    put("logit_scale", get("logit_scale"));
    let dir = tempfile::tempdir().unwrap();
    candle_core::safetensors::save(&hf, dir.path().join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "projection_dim": 32,
        "vision_config": {"hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 4,
                          "num_hidden_layers": 2, "image_size": 32, "patch_size": 8, "hidden_act": "quick_gelu"},
        "text_config": {"hidden_size": 16, "intermediate_size": 64, "num_attention_heads": 2,
                        "num_hidden_layers": 2, "max_position_embeddings": 77, "vocab_size": 49408}
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();

    let model = ClipModel::load(&ModelSource::Dir(dir.path().to_path_buf()), &Device::Cpu)
        .expect("HF layout loads");
    let exp = expected();
    let cls = model
        .vision
        .forward(&exp["pixels"].unsqueeze(0).unwrap())
        .unwrap();
    let cos = cosine(&vec1(&cls), &vec1(&exp["cls_embedding"]));
    assert!(cos > 0.99999, "cos {cos}");
    let tok = model.tokenizer().unwrap();
    let text = model
        .encode_texts(&tok, &["a photo of a cat".to_string()])
        .unwrap();
    let cos = cosine(&vec1(&text), &vec1(&exp["text_embeddings"].get(0).unwrap()));
    assert!(cos > 0.99999, "cos {cos}");
}

#[test]
fn random_models_are_deterministic_per_seed() {
    let x = Tensor::ones((1, 3, 64, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
    let emb = |spec: &str| {
        vec1(
            &ClipModel::load_spec(spec, &Device::Cpu)
                .unwrap()
                .vision
                .forward(&x)
                .unwrap(),
        )
    };
    let a = emb("random:tiny:7");
    assert_eq!(a, emb("random:tiny:7"));
    assert!(cosine(&a, &emb("random:tiny:8")) < 0.99);
    assert!(ClipModel::load_spec("random:vit-z-99", &Device::Cpu).is_err());
}
