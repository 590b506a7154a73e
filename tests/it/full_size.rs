//! ViT-B/16 random weights at 448 on the reference's cat/dog example, against maskinversion_torch 1.1.
//! The fixture is 600 MB and written by `python tests/fixtures/make_reference.py --full DIR`; point
//! REGIONSEEK_B16_FIXTURE at DIR (the test skips with a message otherwise).

use crate::common;

use candle_core::Device;
use common::*;
use regionseek::clip::{ClipModel, ModelSource};
use regionseek::invert::{invert_image, invert_pixels, GradChoice, InversionConfig};
use regionseek::masks::BinaryMask;

struct Fixture {
    model: ClipModel,
    expected: std::collections::HashMap<String, candle_core::Tensor>,
    examples: std::path::PathBuf,
    masks: Vec<BinaryMask>,
}

/// The B/16 fixture and the cat/dog example, or None (with a message) where either is absent.
fn fixture() -> Option<Fixture> {
    let Some(dir) = std::env::var_os("REGIONSEEK_B16_FIXTURE").map(std::path::PathBuf::from) else {
        eprintln!(
            "SKIP: REGIONSEEK_B16_FIXTURE not set (write it with make_reference.py --full DIR)"
        );
        return None;
    };
    let examples = shared_data()?.join("maskinversion-examples");
    let model = ClipModel::load(&ModelSource::Dir(dir.clone()), &Device::Cpu).unwrap();
    let expected =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let masks = ["cat_mask.png", "dog_mask.png"]
        .iter()
        .map(|f| BinaryMask::read(&examples.join(f)).unwrap())
        .collect();
    Some(Fixture {
        model,
        expected,
        examples,
        masks,
    })
}

#[test]
fn vit_b16_at_448_matches_reference() {
    let Some(Fixture {
        model,
        expected: exp,
        examples: _,
        masks,
    }) = fixture()
    else {
        return;
    };
    let cfg = InversionConfig {
        size: 448,
        grad: GradChoice::Direct,
        ..Default::default()
    };

    // From the reference's own preprocessed tensor: the model and the inversion alone.
    let pixels = exp["pixels"].unsqueeze(0).unwrap();
    let (cls, _) = model.vision.forward_with_taps(&pixels).unwrap();
    let cos_cls = cosine(&vec1(&cls), &vec1(&exp["cls_embedding"]));
    eprintln!("B/16@448 CLS embedding cosine {cos_cls:.7}");
    assert!(cos_cls > 0.99999);
    let out = invert_pixels(
        &model,
        &pixels,
        639,
        480,
        &masks,
        &cfg,
        std::time::Instant::now(),
    )
    .unwrap();
    for (k, r) in out.masks.iter().enumerate() {
        let cos = cosine(
            &r.as_ref().unwrap().embedding,
            &vec1(&exp["let_alpha0"].get(k).unwrap()),
        );
        eprintln!("B/16@448 mask {k}: LET cosine {cos:.7} (reference preprocessing)");
        assert!(cos >= 0.999, "mask {k}: {cos}");
    }
}

/// End to end from the JPEG file, as a user gives it: our decoder (libjpeg-turbo, PIL's), our resize, the
/// model and the inversion. Adam's sign-like first steps amplify any input difference in the token (with the
/// previous decoder, 1-3 levels off PIL's, the LETs fell to cosine 0.9969), so this is the decoder's real test.
#[test]
fn vit_b16_at_448_end_to_end_from_jpeg() {
    let Some(Fixture {
        model,
        expected: exp,
        examples: ex,
        masks,
    }) = fixture()
    else {
        return;
    };
    let cfg = InversionConfig {
        size: 448,
        grad: GradChoice::Direct,
        ..Default::default()
    };
    let img = regionseek::decode::load_rgb(&ex.join("cats_and_dogs.jpg")).unwrap();
    let out = invert_image(&model, &img, &masks, &cfg).unwrap();
    let cos_cls = cosine(&out.cls_embedding, &vec1(&exp["cls_embedding"]));
    eprintln!("B/16@448 CLS embedding cosine {cos_cls:.7} (end to end from the JPEG)");
    assert!(cos_cls > 0.99999, "{cos_cls}");
    for (k, r) in out.masks.iter().enumerate() {
        let cos = cosine(
            &r.as_ref().unwrap().embedding,
            &vec1(&exp["let_alpha0"].get(k).unwrap()),
        );
        eprintln!("B/16@448 mask {k}: LET cosine {cos:.7} (end to end from the JPEG)");
        assert!(cos >= 0.9999, "mask {k}: LET cosine {cos} from the JPEG");
    }
}
