//! Reading photos: any format the `image` crate decodes, EXIF orientation applied, converted to RGB.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

#[derive(Debug, thiserror::Error)]
#[error("cannot decode image {path}: {message}")]
pub struct DecodeError {
    pub path: PathBuf,
    pub message: String,
}

/// Decodes an image file upright (EXIF orientation applied) as 8-bit RGB.
pub fn load_rgb(path: &Path) -> Result<RgbImage, DecodeError> {
    let err = |message: String| DecodeError {
        path: path.to_path_buf(),
        message,
    };
    let reader = ImageReader::open(path)
        .map_err(|e| err(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?;
    let mut decoder = reader.into_decoder().map_err(|e| err(e.to_string()))?;
    // A broken EXIF block should not cost the photo: keep its stored orientation.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| err(e.to_string()))?;
    img.apply_orientation(orientation);
    if img.width() == 0 || img.height() == 0 {
        return Err(err("the image is empty".into()));
    }
    Ok(img.to_rgb8())
}
