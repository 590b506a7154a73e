//! The polygon rasteriser on arbitrary vertices (finite or not, inside or far outside the image): never
//! panics, and every accepted polygon covers exactly h·w pixels with runs that round-trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use regionseek_masks::{polygon, Rle};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let height = data[0] as u32 % 64;
    let width = data[1] as u32 % 64;
    // Half the inputs as small integers (realistic shapes), half as raw f32 bits (NaN, inf, huge).
    let coords: Vec<f64> = if data.len() % 2 == 0 {
        data[2..].iter().map(|&b| b as f64 / 3.0 - 10.0).collect()
    } else {
        data[2..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect()
    };
    let parts: Vec<Vec<f64>> = coords.chunks(10).map(|c| c.to_vec()).collect();
    if let Ok(rle) = polygon::rasterize_all(&parts, height, width) {
        let total: u64 = rle.counts.iter().map(|&c| c as u64).sum();
        assert_eq!(total, height as u64 * width as u64);
        let mask = rle.decode();
        assert_eq!(mask.area() as u64, rle.area());
        assert_eq!(Rle::encode(&mask).decode(), mask);
        let s = rle.to_compressed();
        assert_eq!(Rle::from_compressed(&s, height, width).unwrap(), rle);
    }
});
