//! Where a model's weights come from: a directory laid out as on the hub (Hugging Face `CLIPModel` or
//! OpenCLIP), or a built-in seeded random model of a real architecture for tests and benchmarks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::config::{
    Activation, Arch, ClipConfig, Normalization, TextConfig, VisionConfig, OPENAI_NORMALIZATION,
};
use super::naming::Naming;

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("model directory {0} does not exist")]
    MissingDir(PathBuf),
    #[error("{0} holds neither an OpenCLIP model (open_clip_config.json + open_clip_model.safetensors) nor a Hugging Face CLIPModel (config.json + model.safetensors)")]
    UnknownLayout(PathBuf),
    #[error("cannot read {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path} is not a valid model config: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path} is not a valid safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Tensor { path: PathBuf, message: String },
    #[error("unknown model `{0}`: give a model directory, `random:<arch>[:seed]` or a name from `regionseek weights list` (architectures: vit-b-32, vit-b-16, vit-l-14, vit-h-14, and tiny for tests at 32-64 px: at the pipelines' 448 px it is slower than vit-b-32)")]
    UnknownModel(String),
    #[error(
        "model `{name}` ({what}) is not on this machine (looked in {looked}). Fetch it once with `regionseek \
         weights fetch {name}` (needs a connection to the Hugging Face hub), or pass --model DIR (a CLIP \
         model folder) or --model random:{arch} (random weights of the same architecture: a demo whose scores \
         mean nothing)"
    )]
    NotFetched {
        name: String,
        what: String,
        arch: String,
        looked: String,
    },
    #[error("cannot download `{name}` ({message}). Without a connection, download it elsewhere and put the files in {dir} (see weights/README.md), or pass --model DIR")]
    Offline {
        name: String,
        dir: PathBuf,
        message: String,
    },
}

/// Where the weights come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    Dir(PathBuf),
    /// A model known by name (`weights list`), found in `dir`: recorded by its name, so that an index built
    /// with it resumes and searches from any folder and whichever copy of the files is found.
    Named {
        name: String,
        dir: PathBuf,
    },
    Random {
        arch: Arch,
        seed: u64,
    },
}

impl ModelSource {
    /// `random:<arch>[:seed]`, or a path to a model directory.
    pub fn parse(spec: &str) -> Result<Self, WeightsError> {
        if let Some(rest) = spec.strip_prefix("random:") {
            let mut parts = rest.splitn(2, ':');
            let arch_name = parts.next().unwrap_or_default();
            let arch = Arch::parse(arch_name)
                .ok_or_else(|| WeightsError::UnknownModel(spec.to_string()))?;
            let seed = match parts.next() {
                Some(s) => s
                    .parse()
                    .map_err(|_| WeightsError::UnknownModel(spec.to_string()))?,
                None => 0,
            };
            return Ok(ModelSource::Random { arch, seed });
        }
        // A bare name is a name even if a file of that name sits in the current folder (an index folder
        // `--out clip-vit-b-16`, say); `./clip-vit-b-16` is a folder.
        let written_as_path = spec.contains('/') || spec.starts_with('.');
        if !written_as_path {
            if let Some(entry) = super::manifest::find(spec) {
                let dir = resolve_named(&entry)?;
                return Ok(ModelSource::Named {
                    name: entry.name,
                    dir,
                });
            }
        }
        Ok(ModelSource::Dir(PathBuf::from(spec)))
    }

    /// A stable identifier recorded next to every embedding (random models are labelled as such).
    pub fn id(&self) -> String {
        match self {
            ModelSource::Dir(p) => p.display().to_string(),
            ModelSource::Named { name, .. } => name.clone(),
            ModelSource::Random { arch, seed } => format!("random:{}:{seed}", arch.name()),
        }
    }
}

/// Where a model known by name is looked for, in order: `$REGIONSEEK_WEIGHTS/NAME`, `weights/NAME` in the
/// current folder (where `weights fetch` puts it), the source tree's `weights/NAME`, and the Hugging Face hub
/// cache's snapshots of its repository (`$HF_HUB_CACHE`, `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
pub fn named_model_places(entry: &super::manifest::ManifestEntry) -> Vec<PathBuf> {
    let mut places = Vec::new();
    if let Some(root) = std::env::var_os("REGIONSEEK_WEIGHTS") {
        places.push(PathBuf::from(root).join(&entry.name));
    }
    places.push(PathBuf::from("weights").join(&entry.name));
    places.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("weights")
            .join(&entry.name),
    );
    let hub = std::env::var_os("HF_HUB_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
        });
    if let Some(hub) = hub {
        let snapshots = hub
            .join(format!("models--{}", entry.repo.replace('/', "--")))
            .join("snapshots");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&snapshots)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        found.sort();
        places.extend(found);
        if places.last().is_none_or(|p| !p.starts_with(&snapshots)) {
            places.push(snapshots);
        }
    }
    places
}

/// The first of [`named_model_places`] that holds all of the model's files.
fn resolve_named(entry: &super::manifest::ManifestEntry) -> Result<PathBuf, WeightsError> {
    resolve_in(entry, &named_model_places(entry))
}

fn resolve_in(
    entry: &super::manifest::ManifestEntry,
    places: &[PathBuf],
) -> Result<PathBuf, WeightsError> {
    places
        .iter()
        .find(|dir| entry.files.iter().all(|f| dir.join(f).is_file()))
        .cloned()
        .ok_or_else(|| WeightsError::NotFetched {
            name: entry.name.clone(),
            what: format!("{} weights from {}", entry.arch, entry.repo),
            arch: entry.arch.clone(),
            looked: places
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// A resolved model directory: its config, the tensor file and its naming.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub dir: PathBuf,
    pub config: ClipConfig,
    pub weights: PathBuf,
    pub naming: Naming,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, WeightsError> {
    let text = std::fs::read_to_string(path).map_err(|e| WeightsError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| WeightsError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[derive(Deserialize)]
struct OpenClipFile {
    model_cfg: OpenClipModelCfg,
    #[serde(default)]
    preprocess_cfg: Option<OpenClipPreprocess>,
}

#[derive(Deserialize)]
struct OpenClipModelCfg {
    embed_dim: usize,
    #[serde(default)]
    quick_gelu: bool,
    vision_cfg: OpenClipVision,
    text_cfg: OpenClipText,
}

fn default_head_width() -> usize {
    64
}
fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_context() -> usize {
    77
}
fn default_vocab() -> usize {
    49408
}

#[derive(Deserialize)]
struct OpenClipVision {
    image_size: usize,
    layers: usize,
    width: usize,
    #[serde(default = "default_head_width")]
    head_width: usize,
    patch_size: usize,
    #[serde(default = "default_mlp_ratio")]
    mlp_ratio: f64,
}

#[derive(Deserialize)]
struct OpenClipText {
    #[serde(default = "default_context")]
    context_length: usize,
    #[serde(default = "default_vocab")]
    vocab_size: usize,
    width: usize,
    heads: usize,
    layers: usize,
    #[serde(default = "default_mlp_ratio")]
    mlp_ratio: f64,
}

#[derive(Deserialize)]
struct OpenClipPreprocess {
    mean: [f32; 3],
    std: [f32; 3],
}

fn check(cond: bool, path: &Path, message: &str) -> Result<(), WeightsError> {
    if cond {
        Ok(())
    } else {
        Err(WeightsError::Config {
            path: path.to_path_buf(),
            message: message.to_string(),
        })
    }
}

fn openclip_config(path: &Path) -> Result<ClipConfig, WeightsError> {
    let f: OpenClipFile = read_json(path)?;
    let m = f.model_cfg;
    let v = m.vision_cfg;
    let t = m.text_cfg;
    check(
        v.head_width > 0 && v.width % v.head_width == 0,
        path,
        "vision width must be a multiple of head_width",
    )?;
    check(
        v.patch_size > 0 && v.image_size % v.patch_size == 0,
        path,
        "image_size must be a multiple of patch_size",
    )?;
    check(
        t.heads > 0 && t.width % t.heads == 0,
        path,
        "text width must be a multiple of heads",
    )?;
    check(
        v.layers > 0 && t.layers > 0,
        path,
        "both towers need at least one layer",
    )?;
    let act = if m.quick_gelu {
        Activation::QuickGelu
    } else {
        Activation::Gelu
    };
    Ok(ClipConfig {
        embed_dim: m.embed_dim,
        vision: VisionConfig {
            image_size: v.image_size,
            patch_size: v.patch_size,
            width: v.width,
            layers: v.layers,
            heads: v.width / v.head_width,
            mlp_dim: (v.width as f64 * v.mlp_ratio) as usize,
            activation: act,
            ln_eps: 1e-5,
        },
        text: TextConfig {
            context_length: t.context_length,
            vocab_size: t.vocab_size,
            width: t.width,
            layers: t.layers,
            heads: t.heads,
            mlp_dim: (t.width as f64 * t.mlp_ratio) as usize,
            activation: act,
            ln_eps: 1e-5,
        },
        normalization: f
            .preprocess_cfg
            .map(|p| Normalization {
                mean: p.mean,
                std: p.std,
            })
            .unwrap_or(OPENAI_NORMALIZATION),
    })
}

// Defaults are transformers' CLIPVisionConfig / CLIPTextConfig defaults: hub config.json files omit them.
#[derive(Deserialize)]
struct HfFile {
    #[serde(default = "hf_projection")]
    projection_dim: usize,
    #[serde(default)]
    vision_config: HfVision,
    #[serde(default)]
    text_config: HfText,
}
fn hf_projection() -> usize {
    512
}
fn hf_act() -> String {
    "quick_gelu".into()
}
fn hf_eps() -> f64 {
    1e-5
}

#[derive(Deserialize)]
struct HfVision {
    hidden_size: usize,
    intermediate_size: usize,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    image_size: usize,
    patch_size: usize,
    #[serde(default = "hf_act")]
    hidden_act: String,
    #[serde(default = "hf_eps")]
    layer_norm_eps: f64,
}
impl Default for HfVision {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_attention_heads: 12,
            num_hidden_layers: 12,
            image_size: 224,
            patch_size: 32,
            hidden_act: hf_act(),
            layer_norm_eps: 1e-5,
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
struct HfText {
    hidden_size: usize,
    intermediate_size: usize,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    max_position_embeddings: usize,
    vocab_size: usize,
    hidden_act: String,
    layer_norm_eps: f64,
}
impl Default for HfText {
    fn default() -> Self {
        Self {
            hidden_size: 512,
            intermediate_size: 2048,
            num_attention_heads: 8,
            num_hidden_layers: 12,
            max_position_embeddings: 77,
            vocab_size: 49408,
            hidden_act: hf_act(),
            layer_norm_eps: 1e-5,
        }
    }
}

fn hf_config(path: &Path) -> Result<ClipConfig, WeightsError> {
    let f: HfFile = read_json(path)?;
    let v = f.vision_config;
    let t = f.text_config;
    let act = |name: &str| {
        Activation::from_hf_name(name).ok_or_else(|| WeightsError::Config {
            path: path.to_path_buf(),
            message: format!("unsupported activation `{name}`"),
        })
    };
    check(
        v.num_attention_heads > 0 && v.hidden_size % v.num_attention_heads == 0,
        path,
        "vision hidden_size must be a multiple of num_attention_heads",
    )?;
    check(
        v.patch_size > 0 && v.image_size % v.patch_size == 0,
        path,
        "image_size must be a multiple of patch_size",
    )?;
    check(
        t.num_attention_heads > 0 && t.hidden_size % t.num_attention_heads == 0,
        path,
        "text hidden_size must be a multiple of num_attention_heads",
    )?;
    Ok(ClipConfig {
        embed_dim: f.projection_dim,
        vision: VisionConfig {
            image_size: v.image_size,
            patch_size: v.patch_size,
            width: v.hidden_size,
            layers: v.num_hidden_layers,
            heads: v.num_attention_heads,
            mlp_dim: v.intermediate_size,
            activation: act(&v.hidden_act)?,
            ln_eps: v.layer_norm_eps,
        },
        text: TextConfig {
            context_length: t.max_position_embeddings,
            vocab_size: t.vocab_size,
            width: t.hidden_size,
            layers: t.num_hidden_layers,
            heads: t.num_attention_heads,
            mlp_dim: t.intermediate_size,
            activation: act(&t.hidden_act)?,
            ln_eps: t.layer_norm_eps,
        },
        normalization: OPENAI_NORMALIZATION,
    })
}

impl ModelFiles {
    pub fn resolve(dir: &Path) -> Result<Self, WeightsError> {
        if !dir.is_dir() {
            return Err(WeightsError::MissingDir(dir.to_path_buf()));
        }
        let oc = dir.join("open_clip_config.json");
        if oc.is_file() {
            return Ok(Self {
                dir: dir.to_path_buf(),
                config: openclip_config(&oc)?,
                weights: dir.join("open_clip_model.safetensors"),
                naming: Naming::OpenClip,
            });
        }
        let hf = dir.join("config.json");
        if hf.is_file() {
            return Ok(Self {
                dir: dir.to_path_buf(),
                config: hf_config(&hf)?,
                weights: dir.join("model.safetensors"),
                naming: Naming::Hf,
            });
        }
        Err(WeightsError::UnknownLayout(dir.to_path_buf()))
    }

    /// A VarBuilder over the mmapped tensor file, after checking that it parses.
    pub fn var_builder(&self, device: &Device) -> Result<VarBuilder<'static>, WeightsError> {
        let path = &self.weights;
        if !path.is_file() {
            return Err(WeightsError::Io {
                path: path.clone(),
                message: "file not found".into(),
            });
        }
        // SAFETY: the file is mapped read-only; a concurrent writer could change it under us, as with any
        // mmapped model file, and the user owns that directory.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, device) }
            .map_err(|e| WeightsError::Safetensors {
                path: path.clone(),
                message: one_line(&e),
            })?;
        Ok(vb)
    }
}

/// candle errors carry backtraces and context on several lines; the user needs the first.
pub(crate) fn one_line(e: &candle_core::Error) -> String {
    let s = e.to_string();
    s.lines().next().unwrap_or_default().trim().to_string()
}

/// A deterministic normal generator (SplitMix64 + Box–Muller): the same weights on every machine.
struct NormalRng(u64);

impl NormalRng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn fill_normal(&mut self, n: usize, mean: f32, std: f32) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let (u1, u2) = (self.uniform(), self.uniform());
            let r = (-2.0 * u1.ln()).sqrt();
            let t = std::f64::consts::TAU * u2;
            out.push(mean + std * (r * t.cos()) as f32);
            out.push(mean + std * (r * t.sin()) as f32);
        }
        out.truncate(n);
        out
    }
}

fn name_hash(name: &str) -> u64 {
    // FNV-1a: each tensor gets its own stream, so the weights do not depend on generation order.
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Seeded random weights of a real architecture in OpenCLIP naming, with open_clip's init scales and
/// non-trivial LayerNorm parameters (so that a loading mistake cannot hide behind γ=1, β=0).
pub fn random_state_dict(
    cfg: &ClipConfig,
    seed: u64,
    device: &Device,
) -> candle_core::Result<HashMap<String, Tensor>> {
    let mut specs: Vec<(String, Vec<usize>, f32, f32)> = Vec::new();
    let mut push =
        |name: String, shape: Vec<usize>, mean: f32, std: f32| specs.push((name, shape, mean, std));
    let tower = |push: &mut dyn FnMut(String, Vec<usize>, f32, f32),
                 prefix: &str,
                 w: usize,
                 f: usize,
                 layers: usize| {
        let attn_std = (w as f32).powf(-0.5);
        let proj_std = attn_std * ((2 * layers) as f32).powf(-0.5);
        let fc_std = ((2 * w) as f32).powf(-0.5);
        for i in 0..layers {
            let b = format!("{prefix}.{i}");
            for ln in ["ln_1", "ln_2"] {
                push(format!("{b}.{ln}.weight"), vec![w], 1.0, 0.1);
                push(format!("{b}.{ln}.bias"), vec![w], 0.0, 0.05);
            }
            push(
                format!("{b}.attn.in_proj_weight"),
                vec![3 * w, w],
                0.0,
                attn_std,
            );
            push(format!("{b}.attn.in_proj_bias"), vec![3 * w], 0.0, 0.02);
            push(
                format!("{b}.attn.out_proj.weight"),
                vec![w, w],
                0.0,
                proj_std,
            );
            push(format!("{b}.attn.out_proj.bias"), vec![w], 0.0, 0.02);
            push(format!("{b}.mlp.c_fc.weight"), vec![f, w], 0.0, fc_std);
            push(format!("{b}.mlp.c_fc.bias"), vec![f], 0.0, 0.02);
            push(format!("{b}.mlp.c_proj.weight"), vec![w, f], 0.0, proj_std);
            push(format!("{b}.mlp.c_proj.bias"), vec![w], 0.0, 0.02);
        }
    };
    let v = &cfg.vision;
    let c = v.width;
    let g0 = v.base_grid();
    let scale = (c as f32).powf(-0.5);
    push(
        "visual.conv1.weight".into(),
        vec![c, 3, v.patch_size, v.patch_size],
        0.0,
        (3.0 * (v.patch_size * v.patch_size) as f32).powf(-0.5),
    );
    push("visual.class_embedding".into(), vec![c], 0.0, scale);
    push(
        "visual.positional_embedding".into(),
        vec![g0 * g0 + 1, c],
        0.0,
        scale,
    );
    push("visual.ln_pre.weight".into(), vec![c], 1.0, 0.1);
    push("visual.ln_pre.bias".into(), vec![c], 0.0, 0.05);
    tower(
        &mut push,
        "visual.transformer.resblocks",
        c,
        v.mlp_dim,
        v.layers,
    );
    push("visual.ln_post.weight".into(), vec![c], 1.0, 0.1);
    push("visual.ln_post.bias".into(), vec![c], 0.0, 0.05);
    push("visual.proj".into(), vec![c, cfg.embed_dim], 0.0, scale);
    let t = &cfg.text;
    push(
        "token_embedding.weight".into(),
        vec![t.vocab_size, t.width],
        0.0,
        0.02,
    );
    push(
        "positional_embedding".into(),
        vec![t.context_length, t.width],
        0.0,
        0.01,
    );
    tower(
        &mut push,
        "transformer.resblocks",
        t.width,
        t.mlp_dim,
        t.layers,
    );
    push("ln_final.weight".into(), vec![t.width], 1.0, 0.1);
    push("ln_final.bias".into(), vec![t.width], 0.0, 0.05);
    push(
        "text_projection".into(),
        vec![t.width, cfg.embed_dim],
        0.0,
        (t.width as f32).powf(-0.5),
    );
    push("logit_scale".into(), vec![], (1.0f32 / 0.07).ln(), 0.0);

    use rayon::prelude::*;
    specs
        .into_par_iter()
        .map(|(name, shape, mean, std)| {
            let n: usize = shape.iter().product();
            let data = NormalRng(seed ^ name_hash(&name)).fill_normal(n, mean, std);
            Ok((name, Tensor::from_vec(data, shape, device)?))
        })
        .collect()
}

#[cfg(test)]
mod named_model_tests {
    use super::*;

    #[test]
    fn a_named_model_is_found_where_its_files_are_and_recorded_by_its_name() {
        let entry = super::super::manifest::find("clip-vit-b-16").expect("in the manifest");
        let tmp = tempfile::tempdir().unwrap();
        let (empty, full) = (tmp.path().join("empty"), tmp.path().join("full"));
        std::fs::create_dir_all(&empty).unwrap();
        std::fs::create_dir_all(&full).unwrap();
        for f in &entry.files {
            std::fs::write(full.join(f), b"").unwrap();
        }
        let places = [tmp.path().join("absent"), empty.clone(), full.clone()];
        assert_eq!(resolve_in(&entry, &places).unwrap(), full);
        let e = resolve_in(&entry, &places[..2]).unwrap_err().to_string();
        for says in [
            "regionseek weights fetch clip-vit-b-16",
            "--model DIR",
            "--model random:vit-b-16",
            empty.to_str().unwrap(),
        ] {
            assert!(e.contains(says), "{e}");
        }
        let named = ModelSource::Named {
            name: entry.name.clone(),
            dir: full,
        };
        assert_eq!(named.id(), "clip-vit-b-16");
        // Written as a path, the same name is a folder.
        assert_eq!(
            ModelSource::parse("./clip-vit-b-16").unwrap(),
            ModelSource::Dir(PathBuf::from("./clip-vit-b-16"))
        );
    }
}
