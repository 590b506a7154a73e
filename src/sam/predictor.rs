//! The SAM predictor on an ONNX pair: one encoder run per photo, one decoder run per box.

use std::path::{Path, PathBuf};

use image::RgbImage;
use ort::session::{OutputSelector, RunOptions, Session};
use ort::value::TensorRef;

use super::runtime::{open_session, SamDevice};
use super::transform::{
    box_to_model_frame, clip_box, encoder_input, logits_to_mask, resize_longest_side,
};
use super::SamError;
use crate::masks::BinaryMask;

/// The official decoder export's inputs, in its order. regionseek's own batched export (weights/export_sam.py)
/// drops the full-size mask branch and with it `orig_im_size`, which is then optional.
pub const DECODER_INPUTS: [&str; 6] = [
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
];
const OPTIONAL_DECODER_INPUT: &str = "orig_im_size";
/// The decoder outputs regionseek reads. The graph's own full-size `masks` output is ignored: the traced
/// export bakes its dummy input's crop size into the graph, which is wrong for other aspect ratios.
pub const DECODER_OUTPUTS: [&str; 2] = ["iou_predictions", "low_res_masks"];

/// Labels of a box's corners in SAM's prompt encoder (top-left, bottom-right).
const BOX_LABELS: [f32; 2] = [2.0, 3.0];

/// Which ONNX files make a SAM model: a directory with `encoder.onnx` + `decoder.onnx` (an optional `sam.json`
/// may name others), or the two files given explicitly.
#[derive(Debug, Clone)]
pub struct SamFiles {
    pub encoder: PathBuf,
    pub decoder: PathBuf,
}

impl SamFiles {
    pub fn from_dir(dir: &Path) -> Result<Self, SamError> {
        let meta = dir.join("sam.json");
        let (mut enc, mut dec) = ("encoder.onnx".to_string(), "decoder.onnx".to_string());
        if meta.is_file() {
            let text = std::fs::read_to_string(&meta).map_err(|e| SamError::Model {
                file: meta.clone(),
                message: e.to_string(),
            })?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| SamError::Model {
                    file: meta.clone(),
                    message: format!("not valid JSON: {e}"),
                })?;
            if let Some(s) = v.get("encoder").and_then(|s| s.as_str()) {
                enc = s.to_string();
            }
            if let Some(s) = v.get("decoder").and_then(|s| s.as_str()) {
                dec = s.to_string();
            }
        }
        let files = Self {
            encoder: dir.join(enc),
            decoder: dir.join(dec),
        };
        for f in [&files.encoder, &files.decoder] {
            if !f.is_file() {
                return Err(SamError::Model {
                    file: f.clone(),
                    message: format!(
                        "not found: a SAM model directory holds encoder.onnx and decoder.onnx \
                         (weights/export_sam.py writes them; see weights/README.md)"
                    ),
                });
            }
        }
        Ok(files)
    }
}

/// How a box becomes a mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SamOptions {
    /// Pick the best of SAM's three multimask outputs by predicted IoU instead of its single-mask output
    /// (SAM's own examples use the single mask for box prompts).
    #[serde(default)]
    pub multimask: bool,
}

/// One photo through the encoder: what every box on it needs.
#[derive(Debug, Clone)]
pub struct ImageEmbedding {
    pub data: Vec<f32>,
    /// `[1, C, h, w]` as the encoder returned it.
    pub shape: Vec<i64>,
    /// (height, width) of the photo.
    pub original: (usize, usize),
    /// (height, width) of the photo inside the encoder's square.
    pub resized: (usize, usize),
}

/// A box's mask.
#[derive(Debug, Clone)]
pub struct SamMask {
    pub mask: BinaryMask,
    /// The box after clipping to the image (what SAM was prompted with).
    pub prompt_box: [f32; 4],
    /// The decoder's predicted IoU of the chosen mask.
    pub iou_prediction: f32,
    /// Which of the decoder's masks was chosen (0 = single-mask output, 1..=3 = multimask outputs).
    pub mask_index: usize,
}

/// The decoder's chosen low-resolution logits for one box.
#[derive(Debug, Clone)]
pub struct MaskLogits {
    pub low_res: Vec<f32>,
    pub low_res_size: (usize, usize),
    pub prompt_box: [f32; 4],
    pub iou_prediction: f32,
    pub mask_index: usize,
}

/// Every mask the decoder returns for one point prompt.
#[derive(Debug, Clone)]
pub struct PointPrediction {
    /// `masks × low_res_size` logits, mask-major.
    pub low_res: Vec<f32>,
    pub low_res_size: (usize, usize),
    pub iou_predictions: Vec<f32>,
}

/// A loaded SAM ONNX pair.
pub struct SamModel {
    encoder: Session,
    decoder: Session,
    /// Whether the decoder export has a dynamic batch axis (many prompts per run); the official export has
    /// batch 1.
    pub decoder_batches: bool,
    /// Whether the decoder takes `orig_im_size` (the official export does).
    decoder_takes_size: bool,
    /// The encoder's square input size (1024 for SAM).
    pub image_size: usize,
    pub embedding_channels: Option<i64>,
    pub device: SamDevice,
    pub files: SamFiles,
}

fn input_shape(session: &Session, index: usize) -> Option<Vec<i64>> {
    session
        .inputs()
        .get(index)
        .and_then(|o| o.dtype().tensor_shape())
        .map(|s| s.iter().copied().collect())
}

impl SamModel {
    pub fn load(files: SamFiles, device: SamDevice, threads: usize) -> Result<Self, SamError> {
        let (encoder, enc_device) = open_session(&files.encoder, device, threads)?;
        let (decoder, _) = open_session(&files.decoder, enc_device, threads)?;
        let sig = |file: &Path, message: String| SamError::Signature {
            file: file.to_path_buf(),
            message,
        };
        let names = |outlets: &[ort::value::Outlet]| {
            outlets
                .iter()
                .map(|o| o.name().to_string())
                .collect::<Vec<_>>()
        };
        let dec_inputs = names(decoder.inputs());
        for want in DECODER_INPUTS {
            if want != OPTIONAL_DECODER_INPUT && !dec_inputs.iter().any(|n| n == want) {
                return Err(sig(
                    &files.decoder,
                    format!(
                        "missing input `{want}` (has: {}); expected the official segment_anything decoder export \
                         (weights/export_sam.py)",
                        dec_inputs.join(", ")
                    ),
                ));
            }
        }
        let dec_outputs = names(decoder.outputs());
        for want in DECODER_OUTPUTS {
            if !dec_outputs.iter().any(|n| n == want) {
                return Err(sig(
                    &files.decoder,
                    format!("missing output `{want}` (has: {})", dec_outputs.join(", ")),
                ));
            }
        }
        if encoder.inputs().len() != 1 || encoder.outputs().is_empty() {
            return Err(sig(
                &files.encoder,
                format!(
                    "an encoder takes one image tensor and returns the image embeddings (has inputs: {}; outputs: {})",
                    names(encoder.inputs()).join(", "),
                    names(encoder.outputs()).join(", ")
                ),
            ));
        }
        let enc_shape = input_shape(&encoder, 0).unwrap_or_default();
        if enc_shape.len() != 4 || (enc_shape[1] != 3 && enc_shape[1] != -1) {
            return Err(sig(
                &files.encoder,
                format!(
                    "input `{}` has shape {enc_shape:?}, expected [1, 3, S, S]",
                    encoder.inputs()[0].name()
                ),
            ));
        }
        let image_size = if enc_shape[2] > 0 {
            enc_shape[2] as usize
        } else {
            1024
        };
        let emb_index = dec_inputs
            .iter()
            .position(|n| n == "image_embeddings")
            .unwrap_or(0);
        let embedding_channels = input_shape(&decoder, emb_index)
            .and_then(|s| s.get(1).copied())
            .filter(|c| *c > 0);
        let coords_index = dec_inputs
            .iter()
            .position(|n| n == "point_coords")
            .unwrap_or(1);
        let decoder_batches = input_shape(&decoder, coords_index)
            .and_then(|s| s.first().copied())
            .is_some_and(|b| b != 1);
        let decoder_takes_size = dec_inputs.iter().any(|n| n == OPTIONAL_DECODER_INPUT);
        Ok(Self {
            encoder,
            decoder,
            decoder_batches,
            decoder_takes_size,
            image_size,
            embedding_channels,
            device: enc_device,
            files,
        })
    }

    /// Loads `dir/encoder.onnx` + `dir/decoder.onnx`.
    pub fn load_dir(dir: &Path, device: SamDevice, threads: usize) -> Result<Self, SamError> {
        Self::load(SamFiles::from_dir(dir)?, device, threads)
    }

    /// Runs the encoder on one photo.
    pub fn embed(&mut self, image: &RgbImage) -> Result<ImageEmbedding, SamError> {
        let (w, h) = (image.width() as usize, image.height() as usize);
        if w == 0 || h == 0 {
            return Err(SamError::Image("the image is empty".into()));
        }
        let resized = resize_longest_side(image, self.image_size);
        let size = self.image_size;
        let input = encoder_input(&resized, size);
        let tensor = TensorRef::from_array_view(([1usize, 3, size, size], &input[..]))
            .map_err(|e| self.run_error("encoder", e))?;
        let outputs = self
            .encoder
            .run(ort::inputs![tensor])
            .map_err(|e| SamError::Run {
                stage: "encoder",
                message: e.to_string(),
            })?;
        let (shape, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| SamError::Run {
                stage: "encoder",
                message: e.to_string(),
            })?;
        let shape: Vec<i64> = shape.iter().copied().collect();
        if shape.len() != 4 || shape[0] != 1 {
            return Err(SamError::Run {
                stage: "encoder",
                message: format!("image embeddings have shape {shape:?}, expected [1, C, h, w]"),
            });
        }
        if let Some(c) = self.embedding_channels {
            if shape[1] != c {
                return Err(SamError::Run {
                    stage: "encoder",
                    message: format!(
                        "the encoder returns {} channels, the decoder expects {c}: the two files are not a pair",
                        shape[1]
                    ),
                });
            }
        }
        Ok(ImageEmbedding {
            data: data.to_vec(),
            shape,
            original: (h, w),
            resized: (resized.height() as usize, resized.width() as usize),
        })
    }

    fn run_error(&self, stage: &'static str, e: impl std::fmt::Display) -> SamError {
        SamError::Run {
            stage,
            message: e.to_string(),
        }
    }

    /// One box on an embedded photo. The box is in the photo's pixels, `[x0, y0, x1, y1]`.
    pub fn predict_box(
        &mut self,
        embedding: &ImageEmbedding,
        bbox: [f32; 4],
        options: SamOptions,
    ) -> Result<SamMask, SamError> {
        let logits = self.predict_box_logits(embedding, bbox, options)?;
        let mask = logits_to_mask(
            &logits.low_res,
            logits.low_res_size,
            self.image_size,
            embedding.resized,
            embedding.original,
        );
        Ok(SamMask {
            mask,
            prompt_box: logits.prompt_box,
            iou_prediction: logits.iou_prediction,
            mask_index: logits.mask_index,
        })
    }

    /// The chosen mask's low-resolution logits, before upsampling and thresholding.
    pub fn predict_box_logits(
        &mut self,
        embedding: &ImageEmbedding,
        bbox: [f32; 4],
        options: SamOptions,
    ) -> Result<MaskLogits, SamError> {
        let (oh, ow) = embedding.original;
        let prompt_box = clip_box(bbox, ow, oh)?;
        let corners = box_to_model_frame(prompt_box, embedding.original, embedding.resized);
        let mut found = self.run_decoder(embedding, &corners, &BOX_LABELS, 1)?;
        let p = found.remove(0);
        let mask_index = choose_mask(&p.iou_predictions, options.multimask);
        let plane = p.low_res_size.0 * p.low_res_size.1;
        Ok(MaskLogits {
            low_res: p.low_res[mask_index * plane..(mask_index + 1) * plane].to_vec(),
            low_res_size: p.low_res_size,
            prompt_box,
            iou_prediction: p.iou_predictions[mask_index],
            mask_index,
        })
    }

    /// The mask for one positive point on an embedded photo (`[x, y]` in the photo's pixels): SAM's three
    /// candidate masks, the one it predicts the best IoU for, as `SamPredictor.predict(point_coords,
    /// point_labels=[1], multimask_output=True)` is used on a click.
    pub fn predict_point(
        &mut self,
        embedding: &ImageEmbedding,
        point: [f32; 2],
    ) -> Result<SamMask, SamError> {
        let corners = box_to_model_frame(
            [point[0], point[1], point[0], point[1]],
            embedding.original,
            embedding.resized,
        );
        let p = self
            .predict_points(embedding, &[[corners[0], corners[1]]], 1)?
            .remove(0);
        let mask_index = choose_mask(&p.iou_predictions, true);
        let plane = p.low_res_size.0 * p.low_res_size.1;
        let mask = logits_to_mask(
            &p.low_res[mask_index * plane..(mask_index + 1) * plane],
            p.low_res_size,
            self.image_size,
            embedding.resized,
            embedding.original,
        );
        Ok(SamMask {
            mask,
            prompt_box: [point[0], point[1], point[0], point[1]],
            iou_prediction: p.iou_predictions[mask_index],
            mask_index,
        })
    }

    /// One positive point per prompt (in the encoder's frame, as the graph takes it before its own `+ 0.5`),
    /// each with SAM's padding point, as `SamPredictor.predict_torch` prompts with points only. A decoder
    /// exported with a batch axis takes up to `batch` prompts per run; the official batch-1 export one.
    pub fn predict_points(
        &mut self,
        embedding: &ImageEmbedding,
        points: &[[f32; 2]],
        batch: usize,
    ) -> Result<Vec<PointPrediction>, SamError> {
        let per_run = if self.decoder_batches {
            batch.max(1)
        } else {
            1
        };
        let mut out = Vec::with_capacity(points.len());
        for chunk in points.chunks(per_run) {
            let coords: Vec<f32> = chunk.iter().flat_map(|p| [p[0], p[1], 0.0, 0.0]).collect();
            let labels: Vec<f32> = chunk.iter().flat_map(|_| [1.0, -1.0]).collect();
            out.extend(self.run_decoder(embedding, &coords, &labels, chunk.len())?);
        }
        Ok(out)
    }

    /// One decoder run: `prompts` prompts of two points each (`coords` `[prompts, 2, 2]`, `labels`
    /// `[prompts, 2]`), no mask input; every output mask of every prompt.
    fn run_decoder(
        &mut self,
        embedding: &ImageEmbedding,
        coords: &[f32],
        labels: &[f32],
        prompts: usize,
    ) -> Result<Vec<PointPrediction>, SamError> {
        let emb_shape: Vec<usize> = embedding.shape.iter().map(|&d| d as usize).collect();
        let (mh, mw) = (4 * emb_shape[2], 4 * emb_shape[3]);
        let mask_input = vec![0f32; mh * mw];
        let no_mask = [0f32];
        // The graph's `masks` output is unused (see DECODER_OUTPUTS); sizing it to the resized photo keeps its
        // cost bounded for very large photos.
        let size_hint = [embedding.resized.0 as f32, embedding.resized.1 as f32];
        let t = |e: ort::Error| SamError::Run {
            stage: "decoder",
            message: e.to_string(),
        };
        let mut inputs = ort::inputs![
            "image_embeddings" => TensorRef::from_array_view((emb_shape.clone(), &embedding.data[..])).map_err(t)?,
            "point_coords" => TensorRef::from_array_view(([prompts, 2, 2], coords)).map_err(t)?,
            "point_labels" => TensorRef::from_array_view(([prompts, 2], labels)).map_err(t)?,
            "mask_input" => TensorRef::from_array_view(([1usize, 1, mh, mw], &mask_input[..])).map_err(t)?,
            "has_mask_input" => TensorRef::from_array_view(([1usize], &no_mask[..])).map_err(t)?,
        ];
        if self.decoder_takes_size {
            inputs.extend(ort::inputs![
                OPTIONAL_DECODER_INPUT => TensorRef::from_array_view(([2usize], &size_hint[..])).map_err(t)?,
            ]);
        }
        // Only the outputs read are fetched. ONNX Runtime still computes the official export's full-size `masks`
        // branch (measured: no faster), which is why weights/export_sam.py's batched export leaves it out.
        let options = RunOptions::new().map_err(t)?.with_outputs(
            OutputSelector::no_default()
                .with("iou_predictions")
                .with("low_res_masks"),
        );
        let outputs = self.decoder.run_with_options(inputs, &options).map_err(t)?;
        let (_, ious) = outputs["iou_predictions"]
            .try_extract_tensor::<f32>()
            .map_err(t)?;
        let (low_shape, low) = outputs["low_res_masks"]
            .try_extract_tensor::<f32>()
            .map_err(t)?;
        let low_shape: Vec<usize> = low_shape.iter().map(|&d| d as usize).collect();
        if low_shape.len() != 4
            || low_shape[0] != prompts
            || low_shape[1] == 0
            || low_shape[0] * low_shape[1] != ious.len()
        {
            return Err(SamError::Run {
                stage: "decoder",
                message: format!(
                    "{prompts} prompts gave low_res_masks {low_shape:?} and {} IoU predictions",
                    ious.len()
                ),
            });
        }
        let (n, plane) = (low_shape[1], low_shape[2] * low_shape[3]);
        Ok((0..prompts)
            .map(|i| PointPrediction {
                low_res: low[i * n * plane..(i + 1) * n * plane].to_vec(),
                low_res_size: (low_shape[2], low_shape[3]),
                iou_predictions: ious[i * n..(i + 1) * n].to_vec(),
            })
            .collect())
    }

    /// All boxes of one photo: one encoder run, then one decoder run per box; each box succeeds or fails on
    /// its own.
    pub fn segment(
        &mut self,
        image: &RgbImage,
        boxes: &[[f32; 4]],
        options: SamOptions,
    ) -> Result<Vec<Result<SamMask, SamError>>, SamError> {
        let embedding = self.embed(image)?;
        Ok(boxes
            .iter()
            .map(|b| self.predict_box(&embedding, *b, options))
            .collect())
    }
}

/// The decoder export returns SAM's single-mask output at index 0 and the three multimask outputs after
/// it; an export made with `return_single_mask` returns one mask.
pub fn choose_mask(ious: &[f32], multimask: bool) -> usize {
    match (ious.len(), multimask) {
        (1, _) | (_, false) => 0,
        (n, true) => {
            let first = if n == 4 { 1 } else { 0 };
            (first..n)
                .max_by(|&a, &b| ious[a].total_cmp(&ious[b]).then(b.cmp(&a)))
                .unwrap_or(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::choose_mask;

    #[test]
    fn single_mask_is_index_zero_and_multimask_skips_it() {
        let ious = [0.99, 0.2, 0.7, 0.5];
        assert_eq!(choose_mask(&ious, false), 0);
        assert_eq!(choose_mask(&ious, true), 2);
        assert_eq!(choose_mask(&[0.3], true), 0);
        // ties keep the first, like numpy's argmax
        assert_eq!(choose_mask(&[0.0, 0.5, 0.5, 0.1], true), 1);
    }
}
