//! Pipeline specs (`pipelines/*.toml`): which stages turn an image's regions into indexed embeddings, and
//! their parameters. Unknown keys and stages are refused with their line number.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::baselines::Baseline;
use crate::invert::InversionConfig;

/// The stages, in the order a spec lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Decode the photo to RGB as Pillow does (stored frame; upright with `--exif-rotate`).
    Decode,
    /// Use the masks the input gives (COCO polygons/RLE, mask PNGs).
    Masks,
    /// Prompt SAM with each region's box.
    Sam,
    /// Use each region's box, filled, as its mask.
    BoxMask,
    /// SAM's automatic masks ("segment everything"): photos need no regions of their own (`[auto_sam]`).
    AutoSam,
    /// Multi-scale sliding boxes as masks, for machines without a SAM model (`[auto_grid]`).
    AutoGrid,
    /// The library's regions (`[propose]`): scored, non-redundant boxes from each photo's quick forward, or
    /// SAM's automatic masks filtered to the same budget when a SAM model is given. Runs in tiers: every photo
    /// searchable first (a whole-photo row and mask-pooled regions), then each region refined by `invert`.
    Propose,
    /// MaskInversion: one CLIP forward per photo, all its masks inverted together.
    Invert,
    /// A baseline embedding (`[embed] method`).
    Embed,
    /// Append to the region table and the vector index.
    Index,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SamParams {
    #[serde(default)]
    pub multimask: bool,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct InvertParams {
    #[serde(default = "default_size")]
    pub size: usize,
    #[serde(default = "default_steps")]
    pub steps: usize,
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default)]
    pub alpha: f64,
    /// Photos per batched image forward (the step loops stay per photo). Unset: `batch_images` on a GPU, 1 on a
    /// CPU (where a bigger product gains nothing and costs memory).
    #[serde(default)]
    pub forward_batch: Option<usize>,
    /// `generic` (default) or `fused`: the fused CUDA kernels for the map and its Dice (README "Fused
    /// kernels").
    #[serde(default)]
    pub map_kernel: Option<crate::invert::MapKernel>,
}

fn default_size() -> usize {
    crate::invert::DEFAULT_SIZE
}
fn default_steps() -> usize {
    crate::invert::DEFAULT_STEPS
}
fn default_lr() -> f64 {
    crate::invert::DEFAULT_LR
}

impl Default for InvertParams {
    fn default() -> Self {
        Self {
            size: default_size(),
            steps: default_steps(),
            lr: default_lr(),
            alpha: 0.0,
            forward_batch: None,
            map_kernel: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedParams {
    pub method: Baseline,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct IndexParams {
    /// Photos per committed batch: a killed run loses at most this many photos' work.
    #[serde(default = "default_batch")]
    pub batch_images: usize,
}

fn default_batch() -> usize {
    8
}

impl Default for IndexParams {
    fn default() -> Self {
        Self {
            batch_images: default_batch(),
        }
    }
}

/// `auto-grid`: square-ish boxes whose side is each scale times the photo's shorter side, slid with the given
/// overlap. A coarse fallback: boxes are not objects.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AutoGridParams {
    pub scales: Vec<f64>,
    /// Fraction of a box shared with its neighbour, in [0, 0.9].
    pub overlap: f64,
}

impl Default for AutoGridParams {
    fn default() -> Self {
        Self {
            scales: vec![1.0, 0.5, 0.25],
            overlap: 0.5,
        }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub stages: Vec<Stage>,
    #[serde(default)]
    pub sam: Option<SamParams>,
    #[serde(default)]
    pub auto_sam: Option<crate::sam::AutoMaskParams>,
    #[serde(default)]
    pub auto_grid: Option<AutoGridParams>,
    #[serde(default)]
    pub propose: Option<super::propose::ProposeParams>,
    #[serde(default)]
    pub invert: Option<InvertParams>,
    #[serde(default)]
    pub embed: Option<EmbedParams>,
    #[serde(default)]
    pub index: Option<IndexParams>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("no pipeline `{name}` (looked for {looked}); available: {available}")]
    NotFound {
        name: String,
        looked: String,
        available: String,
    },
}

/// Where a region's mask comes from, as the spec decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaskStage {
    Given,
    Sam,
    Box,
    /// Regions found in the photo itself; the input lists photos only.
    AutoSam,
    AutoGrid,
    /// The library's tiered regions (SAM optional).
    Propose,
}

impl MaskStage {
    /// Whether the stage finds the regions itself (the input is a plain photo folder).
    pub fn finds_regions(self) -> bool {
        matches!(
            self,
            MaskStage::AutoSam | MaskStage::AutoGrid | MaskStage::Propose
        )
    }

    pub fn needs_sam(self) -> bool {
        matches!(self, MaskStage::Sam | MaskStage::AutoSam)
    }

    /// Whether the stage uses a SAM model when one is given (and does without otherwise).
    pub fn uses_sam(self) -> bool {
        self.needs_sam() || self == MaskStage::Propose
    }

    /// The `source` column of the rows it makes.
    pub fn source(self) -> &'static str {
        match self {
            MaskStage::Given => "gt",
            MaskStage::Sam => "sam",
            MaskStage::Box => "box",
            MaskStage::AutoSam => "auto-sam",
            MaskStage::AutoGrid => "auto-grid",
            MaskStage::Propose => "auto-box",
        }
    }
}

/// How a region becomes a vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedStage {
    Invert,
    Baseline(Baseline),
}

impl EmbedStage {
    pub fn name(self) -> &'static str {
        match self {
            EmbedStage::Invert => "maskinversion",
            EmbedStage::Baseline(b) => b.name(),
        }
    }
}

impl PipelineSpec {
    /// Parses and checks a spec; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SpecError> {
        let invalid = |message: String| SpecError::Invalid {
            path: origin.to_string(),
            message,
        };
        let spec: PipelineSpec = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            invalid(match line {
                Some(l) => format!("line {l}: {}", e.message()),
                None => e.message().to_string(),
            })
        })?;
        spec.check().map_err(invalid)?;
        Ok(spec)
    }

    fn check(&self) -> Result<(), String> {
        let s = &self.stages;
        if s.first() != Some(&Stage::Decode) || s.last() != Some(&Stage::Index) {
            return Err("stages must start with \"decode\" and end with \"index\"".into());
        }
        let masks = s
            .iter()
            .filter(|x| {
                matches!(
                    x,
                    Stage::Masks
                        | Stage::Sam
                        | Stage::BoxMask
                        | Stage::AutoSam
                        | Stage::AutoGrid
                        | Stage::Propose
                )
            })
            .count();
        let embeds = s
            .iter()
            .filter(|x| matches!(x, Stage::Invert | Stage::Embed))
            .count();
        if masks != 1 || embeds != 1 || s.len() != 4 {
            return Err(
                "stages are decode, one mask stage (masks | sam | box-mask | auto-sam | auto-grid | propose), \
                 one embedding stage (invert | embed), index"
                    .into(),
            );
        }
        if matches!(
            s[1],
            Stage::Decode | Stage::Invert | Stage::Embed | Stage::Index
        ) {
            return Err("the mask stage comes right after decode".into());
        }
        if let Some(p) = &self.auto_sam {
            p.validate().map_err(|m| format!("[auto_sam] {m}"))?;
        }
        if s[1] == Stage::Propose && s[2] != Stage::Invert {
            return Err("stage \"propose\" refines its quick tier with \"invert\"".into());
        }
        if let Some(p) = &self.propose {
            p.validate().map_err(|m| format!("[propose] {m}"))?;
        }
        if let Some(g) = &self.auto_grid {
            if g.scales.is_empty()
                || g.scales.iter().any(|s| !(*s > 0.0 && *s <= 1.0))
                || !(0.0..=0.9).contains(&g.overlap)
            {
                return Err("[auto_grid] needs scales in (0, 1] and an overlap in [0, 0.9]".into());
            }
        }
        if s.contains(&Stage::Embed) && self.embed.is_none() {
            return Err("stage \"embed\" needs an [embed] table with `method`".into());
        }
        if let Some(p) = &self.invert {
            if p.size == 0 || p.steps == 0 || !(p.lr > 0.0) || !p.alpha.is_finite() {
                return Err("[invert] needs size > 0, steps > 0, lr > 0 and a finite alpha".into());
            }
        }
        if self
            .invert
            .as_ref()
            .is_some_and(|p| p.forward_batch == Some(0))
        {
            return Err("[invert] forward_batch must be at least 1".into());
        }
        if self.index.as_ref().is_some_and(|i| i.batch_images == 0) {
            return Err("[index] batch_images must be at least 1".into());
        }
        Ok(())
    }

    pub fn mask_stage(&self) -> MaskStage {
        match self.stages[1] {
            Stage::Sam => MaskStage::Sam,
            Stage::BoxMask => MaskStage::Box,
            Stage::AutoSam => MaskStage::AutoSam,
            Stage::AutoGrid => MaskStage::AutoGrid,
            Stage::Propose => MaskStage::Propose,
            _ => MaskStage::Given,
        }
    }

    pub fn embed_stage(&self) -> EmbedStage {
        match (&self.stages[2], &self.embed) {
            (Stage::Embed, Some(e)) => EmbedStage::Baseline(e.method),
            _ => EmbedStage::Invert,
        }
    }

    pub fn inversion_config(&self) -> InversionConfig {
        let p = self.invert.clone().unwrap_or_default();
        InversionConfig {
            size: p.size,
            steps: p.steps,
            lr: p.lr,
            alpha: p.alpha,
            map_kernel: p.map_kernel.unwrap_or(crate::invert::MapKernel::Generic),
            ..InversionConfig::default()
        }
    }

    /// Photos per batched image forward on `device` (see [`InvertParams::forward_batch`]).
    pub fn forward_batch(&self, device: &candle_core::Device) -> usize {
        match self.invert.as_ref().and_then(|p| p.forward_batch) {
            Some(n) => n,
            None if device.is_cuda() => self.batch_images(),
            None => 1,
        }
    }

    pub fn batch_images(&self) -> usize {
        self.index
            .as_ref()
            .map_or(default_batch(), |i| i.batch_images)
    }

    /// A spec by name (`pipelines/NAME.toml` in the pipelines folder, else the built-in spec of that name) or by
    /// path to a `.toml` file.
    pub fn load(name_or_path: &str) -> Result<Self, SpecError> {
        let as_path = Path::new(name_or_path);
        let path = if name_or_path.ends_with(".toml") || as_path.is_file() {
            as_path.to_path_buf()
        } else {
            let dir = pipelines_dir();
            let p = dir.join(format!("{name_or_path}.toml"));
            if !p.is_file() {
                if let Some((name, text)) = BUILT_IN.iter().find(|(n, _)| *n == name_or_path) {
                    return Self::parse(text, &format!("built-in pipeline {name}"));
                }
                return Err(SpecError::NotFound {
                    name: name_or_path.to_string(),
                    looked: p.display().to_string(),
                    available: available(&dir).join(", "),
                });
            }
            p
        };
        let text = std::fs::read_to_string(&path).map_err(|e| SpecError::Invalid {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }
}

/// The specs shipped in `pipelines/`, compiled in: a binary or Python wheel away from the source tree still
/// knows them by name (a folder's file of the same name wins).
const BUILT_IN: &[(&str, &str)] = &[
    ("auto-grid", include_str!("../../pipelines/auto-grid.toml")),
    ("auto-sam", include_str!("../../pipelines/auto-sam.toml")),
    ("boxes", include_str!("../../pipelines/boxes.toml")),
    ("boxes-sam", include_str!("../../pipelines/boxes-sam.toml")),
    ("gt-masks", include_str!("../../pipelines/gt-masks.toml")),
    ("library", include_str!("../../pipelines/library.toml")),
    (
        "masked-crop",
        include_str!("../../pipelines/masked-crop.toml"),
    ),
];

/// `REGIONSEEK_PIPELINES`, else `pipelines/` in the current directory, else the source tree's.
pub fn pipelines_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("REGIONSEEK_PIPELINES") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from("pipelines");
    if local.is_dir() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines")
}

pub fn available(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let p = e.path();
                    (p.extension()? == "toml").then(|| p.file_stem()?.to_str().map(String::from))?
                })
                .collect()
        })
        .unwrap_or_default();
    names.extend(BUILT_IN.iter().map(|(n, _)| n.to_string()));
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_pipeline_is_built_in_verbatim() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        let mut shipped: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                (p.extension()? == "toml").then(|| p.file_stem()?.to_str().map(String::from))?
            })
            .collect();
        shipped.sort();
        let built_in: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            shipped, built_in,
            "pipelines/*.toml and BUILT_IN list the same specs"
        );
        for (name, text) in BUILT_IN {
            assert_eq!(
                std::fs::read_to_string(dir.join(format!("{name}.toml"))).unwrap(),
                *text
            );
        }
    }

    #[test]
    fn every_shipped_pipeline_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        let names = available(&dir);
        for want in [
            "gt-masks",
            "boxes-sam",
            "boxes",
            "masked-crop",
            "auto-sam",
            "auto-grid",
            "library",
        ] {
            assert!(names.iter().any(|n| n == want), "{names:?}");
        }
        for n in names {
            PipelineSpec::load(dir.join(format!("{n}.toml")).to_str().unwrap()).unwrap();
        }
    }

    #[test]
    fn unknown_keys_and_stages_are_refused_with_their_line() {
        let text = "name = \"x\"\nstages = [\"decode\", \"masks\", \"invert\", \"index\"]\n[invert]\nsteps = 3\nlearning_rate = 0.1\n";
        let e = PipelineSpec::parse(text, "x.toml").unwrap_err().to_string();
        assert!(e.contains("line 5") && e.contains("learning_rate"), "{e}");
        let text = "name = \"x\"\n\nstages = [\"decode\", \"segment\", \"invert\", \"index\"]\n";
        let e = PipelineSpec::parse(text, "x.toml").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("segment"), "{e}");
        let text = "name = \"x\"\nstages = [\"decode\", \"masks\", \"embed\", \"index\"]\n";
        let e = PipelineSpec::parse(text, "x.toml").unwrap_err().to_string();
        assert!(e.contains("[embed]"), "{e}");
    }

    #[test]
    fn the_map_kernel_is_chosen_in_the_spec_and_misspellings_are_refused() {
        let head =
            "name = \"x\"\nstages = [\"decode\", \"masks\", \"invert\", \"index\"]\n[invert]\n";
        let default = PipelineSpec::parse(head, "x.toml").unwrap();
        assert_eq!(
            default.inversion_config().map_kernel,
            crate::invert::MapKernel::Generic
        );
        let fused =
            PipelineSpec::parse(&format!("{head}map_kernel = \"fused\"\n"), "x.toml").unwrap();
        assert_eq!(
            fused.inversion_config().map_kernel,
            crate::invert::MapKernel::Fused
        );
        let e = PipelineSpec::parse(&format!("{head}map_kernel = \"fast\"\n"), "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 4") && e.contains("fast"), "{e}");
    }
}
