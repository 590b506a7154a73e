//! Photo decoding on arbitrary bytes: every format regionseek reads (TIFF, BMP, HEIC/AVIF through libheif, and
//! the rest) must decode or refuse, never crash. Seeds: the parity fixtures in tests/fixtures/decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regionseek::decode::{decode_rgb, DecodeOptions};

fuzz_target!(|data: &[u8]| {
    let options = DecodeOptions {
        // Small enough that a forged size cannot exhaust the fuzzer's memory.
        max_pixels: 1 << 22,
        exif_rotate: true,
    };
    if let Ok(img) = decode_rgb(data, std::path::Path::new("fuzz"), &options) {
        assert_eq!(
            img.as_raw().len(),
            img.width() as usize * img.height() as usize * 3
        );
    }
});
