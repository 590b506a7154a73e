//! The COCO reader on arbitrary bytes: never panics, and every annotation it keeps turns into a mask.
#![no_main]
use libfuzzer_sys::fuzz_target;
use regionseek_masks::CocoDataset;

fuzz_target!(|data: &[u8]| {
    if let Ok(coco) = CocoDataset::from_reader(data, "fuzz.json") {
        for ann in &coco.annotations {
            let img = coco
                .image(ann.image_id)
                .expect("kept annotations name a known image");
            if ann.segmentation.is_some() {
                let rle = ann
                    .to_rle(img.height, img.width)
                    .expect("kept annotations rasterise");
                assert_eq!(
                    rle.counts.iter().map(|&c| c as u64).sum::<u64>(),
                    img.height as u64 * img.width as u64
                );
            }
        }
    }
});
