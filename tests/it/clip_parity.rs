//! The CLIP port against open_clip 2.23.0 + the LeGrad wrapper on the tiny fixture model
//! (tests/fixtures/make_reference.py writes the expectations).

use crate::common;

use candle_core::{Device, Tensor};
use common::*;
use regionseek::clip::{preprocess, ClipModel, ModelSource, Tokenizer};

fn tiny() -> ClipModel {
    ClipModel::load(&ModelSource::Dir(tiny_dir()), &Device::Cpu).expect("tiny fixture model loads")
}

#[test]
fn image_embedding_and_score_target_match_reference() {
    let model = tiny();
    let exp = expected();
    let pixels = exp["pixels"].unsqueeze(0).unwrap();
    let (cls, taps) = model.vision.forward_with_taps(&pixels).unwrap();
    for (name, ours) in [
        ("cls_embedding", &cls),
        ("mean_embedding", &taps.mean_embedding),
        ("zhat", &taps.mean_embedding_unit),
    ] {
        let (a, b) = (vec1(ours), vec1(&exp[name]));
        let cos = cosine(&a, &b);
        let diff = max_abs_diff(&a, &b);
        eprintln!("{name}: cos {cos:.9}, max abs diff {diff:.2e}");
        assert!(cos >= 0.99999, "{name}: cosine {cos}");
        assert!(diff < 1e-4, "{name}: max abs diff {diff}");
    }
    // The batched forward (no taps) gives the same CLS embedding.
    let batched = model
        .vision
        .forward(&Tensor::cat(&[&pixels, &pixels], 0).unwrap())
        .unwrap();
    assert!(max_abs_diff(&vec1(&batched.get(1).unwrap()), &vec1(&cls)) < 1e-5);
}

#[test]
fn preprocessing_of_the_fixture_image_matches_pil() {
    let model = tiny();
    let exp = expected();
    let img = regionseek::decode::load_rgb(&tiny_dir().join("image.png")).unwrap();
    let ours = preprocess::squash(&img, 64, &model.config.normalization, &Device::Cpu).unwrap();
    let diff = max_abs_diff(&vec1(&ours), &vec1(&exp["pixels"]));
    eprintln!("preprocessed pixels: max abs diff {diff:.2e}");
    assert!(diff < 1e-5, "max abs diff {diff}");
}

#[test]
fn tokens_match_open_clip_tokenizer() {
    let json = expected_json();
    let tok = Tokenizer::for_model_dir(Some(&tiny_dir())).expect("BPE vocabulary (run ./setup.sh)");
    for (prompt, want) in json["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(json["tokens"].as_array().unwrap())
    {
        let want: Vec<u32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            tok.encode(prompt.as_str().unwrap(), 77).unwrap(),
            want,
            "prompt {prompt}"
        );
    }
}

#[test]
fn long_text_is_cut_and_ends_with_eot() {
    let tok = Tokenizer::for_model_dir(None).expect("BPE vocabulary (run ./setup.sh)");
    let long = "cat ".repeat(200);
    let ids = tok.encode(&long, 77).unwrap();
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[0], 49406);
    assert_eq!(ids[76], 49407);
}

#[test]
fn text_embeddings_match_reference() {
    let model = tiny();
    let exp = expected();
    let json = expected_json();
    let prompts: Vec<String> = json["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let tok = model.tokenizer().unwrap();
    let ours = model.encode_texts(&tok, &prompts).unwrap();
    for i in 0..prompts.len() {
        let (a, b) = (
            vec1(&ours.get(i).unwrap()),
            vec1(&exp["text_embeddings"].get(i).unwrap()),
        );
        let cos = cosine(&a, &b);
        let diff = max_abs_diff(&a, &b);
        eprintln!("text {i}: cos {cos:.9}, max abs diff {diff:.2e}");
        assert!(
            cos >= 0.99999 && diff < 1e-4,
            "prompt {i}: cos {cos}, diff {diff}"
        );
    }
}

/// The text tower cuts each batch after its last end-of-text token: a query's embedding must not depend
/// on how long the other queries of its batch are.
#[test]
fn a_query_embeds_the_same_alone_and_beside_a_longer_one() {
    let model = tiny();
    let tok = model.tokenizer().unwrap();
    let short = "a dog".to_string();
    let long = "a very long description of a scene with many words in it ".repeat(3);
    let alone = vec1(
        &model
            .encode_texts(&tok, &[short.clone()])
            .unwrap()
            .get(0)
            .unwrap(),
    );
    let batch = model.encode_texts(&tok, &[long, short]).unwrap();
    let beside = vec1(&batch.get(1).unwrap());
    let diff = max_abs_diff(&alone, &beside);
    assert!(diff < 1e-5, "max abs diff {diff:.2e}");
}

#[test]
fn pil_bicubic_resize_of_real_photos_matches_pil() {
    let Some(data) = shared_data() else { return };
    let ex = data.join("maskinversion-examples");
    let dress = regionseek::decode::load_rgb(&ex.join("dress_and_flower.png")).unwrap();
    for s in [224u32, 448] {
        let want = image::open(root().join(format!("tests/fixtures/pil/dress_squash_{s}.png")))
            .unwrap()
            .to_rgb8();
        let ours = preprocess::resize_rgb(&dress, s, s);
        let diffs: Vec<i32> = ours
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .collect();
        let differing = diffs.iter().filter(|d| **d > 0).count();
        let max = diffs.iter().copied().max().unwrap();
        eprintln!(
            "dress {s}: {differing} of {} bytes differ from PIL, max {max} level",
            diffs.len()
        );
        // The PNG decodes identically, so only the pass order can differ, by one rounding level.
        assert!(max <= 1, "{s}: max diff {max}");
    }
}

#[test]
fn jpeg_photo_preprocessing_matches_pil_from_the_jpeg() {
    // The JPEG decodes to PIL's very bytes (libjpeg-turbo on both sides), so as for the PNG only the resize's
    // pass order can differ, by one rounding level.
    let Some(data) = shared_data() else { return };
    let cats = regionseek::decode::load_rgb(&data.join("maskinversion-examples/cats_and_dogs.jpg"))
        .unwrap();
    for (name, ours) in [
        ("cats_squash_224", preprocess::resize_rgb(&cats, 224, 224)),
        (
            "cats_center_crop_224",
            preprocess::resize_center_crop_image(&cats, 224),
        ),
    ] {
        let want = image::open(root().join(format!("tests/fixtures/pil/{name}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(ours.dimensions(), want.dimensions());
        let diffs: Vec<i32> = ours
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .collect();
        let max = diffs.iter().copied().max().unwrap();
        let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
        eprintln!("{name}: max |diff| {max} levels, mean {mean:.4}");
        assert!(max <= 1, "{name}: max {max}, mean {mean}");
    }
}
