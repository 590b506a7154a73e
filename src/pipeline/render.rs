//! Pictures of indexed regions for people: the region cut out (mask as alpha), a thumbnail of the region in
//! its surroundings with the mask outlined, and the whole photo with the region tinted and its box drawn.

use std::path::Path;

use image::{imageops, Rgb, RgbImage, RgbaImage};

use crate::index::Hit;
use crate::masks::{BinaryMask, Rle};

/// The colour regions are drawn in (a saturated orange that stands out on most photos).
const HIGHLIGHT: [u8; 3] = [255, 106, 0];

/// A hit's photo and mask, checked to belong together, both at 1/`reduce` of the photo's size.
struct Scene {
    img: RgbImage,
    mask: BinaryMask,
    reduce: u32,
}

/// The largest reduction (1, 2, 4 or 8) that still leaves `full_side` pixels of the full-size photo at least
/// `max_side` long: a picture shown at 320 pixels never needs a 48-megapixel photo decoded in full.
fn reduction_for(full_side: f32, max_side: u32) -> u32 {
    if max_side == 0 {
        return 1;
    }
    [8u32, 4, 2]
        .into_iter()
        .find(|r| full_side / *r as f32 >= max_side as f32)
        .unwrap_or(1)
}

/// The long side of a hit's box at full size.
fn box_side(hit: &Hit) -> f32 {
    let [x0, y0, x1, y1] = hit.bbox;
    (x1 - x0).max(y1 - y0).max(1.0)
}

/// The photo of a hit, which must lie inside `images_root` (see [`super::photo_path`]), at the reduction
/// `reduce_for` chooses from the photo's full size.
fn scene(
    images_root: &Path,
    hit: &Hit,
    reduce_for: impl FnOnce(&Rle) -> u32,
) -> anyhow::Result<Scene> {
    let mut file = super::photo_path::open_photo(images_root, &hit.image)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot read the photo {}: {}", hit.image, e.kind()))?;
    let rle = Rle::from_coco(&hit.mask_rle)?;
    let reduce = reduce_for(&rle);
    // The photo in the frame its region was indexed in, or the mask would not line up.
    let options = crate::decode::DecodeOptions {
        exif_rotate: hit.exif_rotated,
        ..Default::default()
    };
    // Errors name the photo as the index does, never by where the server keeps it.
    let img = crate::decode::decode_rgb_reduced(&bytes, Path::new(&hit.image), &options, reduce)
        .map_err(|e| anyhow::anyhow!("cannot decode the photo {}: {}", hit.image, e.message))?;
    // A reduced decode hides a change of a few pixels in the photo's size: compare the header's own size.
    if let Some((w, h)) = crate::decode::stored_jpeg_size(&bytes) {
        let full = (rle.width, rle.height);
        let fits = (w, h) == full || (hit.exif_rotated && (h, w) == full);
        anyhow::ensure!(
            fits,
            "{}: the photo is {w}x{h}, its indexed mask {}x{} (the file changed since indexing)",
            hit.image,
            rle.width,
            rle.height
        );
    }
    let mask = rle.decode_sampled(reduce);
    anyhow::ensure!(
        mask.width == img.width() as usize && mask.height == img.height() as usize,
        "{}: the photo's size does not match its indexed {}x{} mask (the file changed since indexing)",
        hit.image,
        rle.width,
        rle.height
    );
    Ok(Scene { img, mask, reduce })
}

/// The mask's bounding box, or the whole photo for an empty mask.
fn mask_box(mask: &BinaryMask) -> [usize; 4] {
    mask.bbox().unwrap_or([0, 0, mask.width, mask.height])
}

/// The region cut out of its photo at full size: the mask's bounding box, with the mask as alpha.
pub fn region_cutout(images_root: &Path, hit: &Hit) -> anyhow::Result<RgbaImage> {
    region_cutout_sized(images_root, hit, 0)
}

/// [`region_cutout`] at most `max_side` pixels on its long side (0: full size).
pub fn region_cutout_sized(
    images_root: &Path,
    hit: &Hit,
    max_side: u32,
) -> anyhow::Result<RgbaImage> {
    let Scene { img, mask, .. } =
        scene(images_root, hit, |_| reduction_for(box_side(hit), max_side))?;
    let [x0, y0, x1, y1] = mask_box(&mask);
    let (w, h) = ((x1 - x0).max(1) as u32, (y1 - y0).max(1) as u32);
    let cut = RgbaImage::from_fn(w, h, |x, y| {
        let (px, py) = (x0 + x as usize, y0 + y as usize);
        let p = img.get_pixel(px as u32, py as u32).0;
        image::Rgba([p[0], p[1], p[2], if mask.get(px, py) { 255 } else { 0 }])
    });
    Ok(shrink(cut, max_side))
}

/// The mask's boundary pixels (those with a background pixel, or the photo's edge, next to them),
/// thickened to `width`.
fn outline(mask: &BinaryMask, width: usize) -> BinaryMask {
    let inner = mask.erode(1);
    let mut edge = mask.clone();
    for (e, i) in edge.data.iter_mut().zip(&inner.data) {
        *e &= 1 - i;
    }
    edge.dilate(width.saturating_sub(1))
}

/// Line width that stays visible once a photo of this size is shown at a few hundred pixels.
fn stroke(w: usize, h: usize) -> usize {
    (w.max(h) / 300).max(1)
}

/// The image scaled down (never up) so that its long side is at most `max_side` pixels.
pub fn shrink<P>(
    img: image::ImageBuffer<P, Vec<u8>>,
    max_side: u32,
) -> image::ImageBuffer<P, Vec<u8>>
where
    P: image::Pixel<Subpixel = u8> + 'static,
{
    let (w, h) = img.dimensions();
    if w.max(h) <= max_side || max_side == 0 {
        return img;
    }
    let s = max_side as f64 / w.max(h) as f64;
    let (nw, nh) = (
        ((w as f64 * s).round() as u32).max(1),
        ((h as f64 * s).round() as u32).max(1),
    );
    imageops::resize(&img, nw, nh, imageops::FilterType::Triangle)
}

fn blend(p: [u8; 3], c: [u8; 3], a: f32) -> [u8; 3] {
    std::array::from_fn(|i| (p[i] as f32 * (1.0 - a) + c[i] as f32 * a).round() as u8)
}

/// The region in its surroundings: its box with a margin, the rest of the photo dimmed, the mask's outline
/// drawn; at most `max_side` pixels on its long side.
pub fn region_thumbnail(images_root: &Path, hit: &Hit, max_side: u32) -> anyhow::Result<RgbImage> {
    // The thumbnail frames the box with a margin of an eighth of its side on each end.
    let Scene { img, mask, .. } = scene(images_root, hit, |_| {
        reduction_for(box_side(hit) * 1.25, max_side)
    })?;
    let (w, h) = (mask.width, mask.height);
    let [x0, y0, x1, y1] = mask_box(&mask);
    let margin = ((x1 - x0).max(y1 - y0) / 8).max(4);
    let (cx0, cy0) = (x0.saturating_sub(margin), y0.saturating_sub(margin));
    let (cx1, cy1) = ((x1 + margin).min(w), (y1 + margin).min(h));
    let edge = outline(&mask, stroke(cx1 - cx0, cy1 - cy0));
    let out = RgbImage::from_fn((cx1 - cx0) as u32, (cy1 - cy0) as u32, |x, y| {
        let (px, py) = (cx0 + x as usize, cy0 + y as usize);
        let p = img.get_pixel(px as u32, py as u32).0;
        Rgb(if edge.get(px, py) {
            HIGHLIGHT
        } else if mask.get(px, py) {
            p
        } else {
            blend(p, [0, 0, 0], 0.55)
        })
    });
    Ok(shrink(out, max_side))
}

/// The whole photo with the region tinted, its outline and its box drawn; at most `max_side` pixels on its
/// long side.
pub fn region_overlay(images_root: &Path, hit: &Hit, max_side: u32) -> anyhow::Result<RgbImage> {
    let Scene { img, mask, reduce } = scene(images_root, hit, |rle| {
        reduction_for(rle.width.max(rle.height) as f32, max_side)
    })?;
    let (w, h) = (mask.width, mask.height);
    let t = stroke(w, h);
    let edge = outline(&mask, t);
    let b = hit
        .bbox
        .map(|v| (v / reduce as f32).max(0.0).round() as usize);
    let (bx0, by0) = (b[0].min(w.saturating_sub(1)), b[1].min(h.saturating_sub(1)));
    let (bx1, by1) = (b[2].clamp(bx0 + 1, w), b[3].clamp(by0 + 1, h));
    let on_box = |x: usize, y: usize| {
        let inside = x >= bx0 && x < bx1 && y >= by0 && y < by1;
        inside && (x < bx0 + t || x + t >= bx1 || y < by0 + t || y + t >= by1)
    };
    let out = RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let (px, py) = (x as usize, y as usize);
        let p = img.get_pixel(x, y).0;
        Rgb(if edge.get(px, py) || on_box(px, py) {
            HIGHLIGHT
        } else if mask.get(px, py) {
            blend(p, HIGHLIGHT, 0.4)
        } else {
            p
        })
    });
    Ok(shrink(out, max_side))
}

/// PNG bytes of an image.
pub fn png_bytes<P: image::PixelWithColorType>(
    img: &image::ImageBuffer<P, Vec<P::Subpixel>>,
) -> anyhow::Result<Vec<u8>>
where
    [P::Subpixel]: image::EncodableLayout,
{
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

/// JPEG bytes of an RGB image at quality 88.
pub fn jpeg_bytes(img: &RgbImage) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 88).encode_image(img)?;
    Ok(out)
}
