//! The compressed-RLE decoder on arbitrary strings and sizes: never panics, and whatever it accepts covers
//! exactly h·w pixels and survives encode -> decode.
#![no_main]
use libfuzzer_sys::fuzz_target;
use regionseek_masks::Rle;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let height = u16::from_le_bytes([data[0], data[1]]) as u32 % 512;
    let width = u16::from_le_bytes([data[2], data[3]]) as u32 % 512;
    let Ok(s) = std::str::from_utf8(&data[4..]) else {
        return;
    };
    if let Ok(rle) = Rle::from_compressed(s, height, width) {
        let total: u64 = rle.counts.iter().map(|&c| c as u64).sum();
        assert_eq!(total, height as u64 * width as u64);
        let again =
            Rle::from_compressed(&rle.to_compressed(), height, width).expect("own output decodes");
        assert_eq!(again, rle);
        let mask = rle.decode();
        assert_eq!(mask.area() as u64, rle.area());
        let canonical = Rle::encode(&mask);
        assert_eq!(canonical.decode(), mask);
        let _ = rle.bbox();
        let _ = rle.iou(&canonical, false);
    }
});
