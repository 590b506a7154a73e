//! `regionseek serve` over a real socket: the JSON API against the CLI's own search, filters, errors as
//! JSON for hostile input, the token, the page in headless Chromium, commits of a concurrent index run
//! picked up whole, and shutdown on SIGTERM.

use crate::common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_regionseek"))
}

/// A running server; killed when dropped.
struct Server {
    child: Child,
    addr: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Server {
    fn start(index: &Path, extra: &[&str]) -> Server {
        let mut child = bin()
            .arg("serve")
            .arg(index)
            .args(["--addr", "127.0.0.1:0", "--json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
            s
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim().is_empty() {
            let _ = child.wait();
            panic!("the server did not start: {}", stderr.join().unwrap());
        }
        let v: Value = serde_json::from_str(&line).expect("a JSON line with the address");
        Server {
            child,
            addr: v["listening"]["addr"].as_str().unwrap().to_string(),
            stderr: Some(stderr),
        }
    }

    fn get(&self, target: &str) -> HttpResponse {
        http_get(&self.addr, target)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM, then the exit code and what it logged.
    fn terminate(mut self) -> (Option<i32>, String) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let t = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break Some(s);
            }
            if t.elapsed() > Duration::from_secs(20) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = self
            .stderr
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        (status.and_then(|s| s.code()), log)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spec(dir: &Path, batch: usize) -> PathBuf {
    let p = dir.join("crop.toml");
    std::fs::write(
        &p,
        format!(
            "name = \"crop\"\nstages = [\"decode\", \"masks\", \"embed\", \"index\"]\n[embed]\nmethod = \
             \"masked-crop\"\n[index]\nbatch_images = {batch}\n"
        ),
    )
    .unwrap();
    p
}

fn index_args(data: &Path, spec: &Path, out: &Path, limit: usize) -> Vec<String> {
    let mut args = coco_index_args(
        &data.join("coco128/images"),
        &data.join("coco128/instances.json"),
        spec,
        out,
    );
    args.extend(["--limit".into(), limit.to_string()]);
    args
}

/// `regionseek index IMAGES --coco COCO` with the random ViT-B/32 and a spec, reporting in JSON.
fn coco_index_args(images: &Path, coco: &Path, spec: &Path, out: &Path) -> Vec<String> {
    [
        "index",
        &images.display().to_string(),
        "--coco",
        &coco.display().to_string(),
        "--pipeline",
        &spec.display().to_string(),
        "--model",
        "random:vit-b-32",
        "--out",
        &out.display().to_string(),
        "--json",
    ]
    .map(String::from)
    .to_vec()
}

/// `regionseek search INDEX TEXT --k K --json`: its JSON.
fn cli_search(index: &Path, text: &str, k: usize) -> Value {
    let (code, out, err) = run_regionseek(&[
        "search",
        index.to_str().unwrap(),
        text,
        "--k",
        &k.to_string(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    last_json(&out)
}

fn build_index(data: &Path, dir: &Path, limit: usize, batch: usize) -> PathBuf {
    let out = dir.join("idx");
    let spec = spec(dir, batch);
    let args = index_args(data, &spec, &out, limit);
    let (code, _, err) = run_regionseek(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    out
}

struct Fixture {
    data: PathBuf,
    index: PathBuf,
}

/// One index of 6 COCO128 photos shared by the read-only tests.
fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        let data = shared_data()?;
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("serve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let index = build_index(&data, &dir, 6, 8);
        Some(Fixture { data, index })
    })
    .as_ref()
}

/// Non-crowd regions per photo of COCO128, by file name.
fn regions_per_photo(data: &Path) -> HashMap<String, usize> {
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(data.join("coco128/instances.json")).unwrap(),
    )
    .unwrap();
    let names: HashMap<i64, String> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_i64().unwrap(),
                i["file_name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut out = HashMap::new();
    for a in v["annotations"].as_array().unwrap() {
        if a["iscrowd"].as_i64() == Some(0) {
            *out.entry(names[&a["image_id"].as_i64().unwrap()].clone())
                .or_default() += 1;
        }
    }
    out
}

fn assert_json_error(r: &HttpResponse, status: u16, mentions: &str) {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let msg = v["error"].as_str().expect("an error message");
    assert_eq!(v["status"], status);
    assert!(
        msg.contains(mentions),
        "{msg:?} should mention {mentions:?}"
    );
}

#[test]
fn the_api_answers_like_the_cli_filters_and_refuses_bad_input_as_json() {
    let Some(f) = fixture() else { return };
    let images = f.data.join("coco128/images");
    let server = Server::start(&f.index, &["--images", images.to_str().unwrap()]);

    let health = server.get("/healthz").json();
    assert_eq!(health["status"], "ok");
    let rows = health["rows"].as_u64().unwrap() as usize;
    assert!(rows > 10, "{health}");

    // The same hits as `regionseek search --json`, with their rows.
    let r = server.get("/api/search?q=a+dog+on+the+grass&k=5");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["cached"], false);
    let hits = v["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 5);
    let cli = cli_search(&f.index, "a dog on the grass", 5);
    for (h, c) in hits.iter().zip(cli["hits"].as_array().unwrap()) {
        assert_eq!(h["row"], c["row"]);
        assert_eq!(h["image"], c["image"]);
        assert_eq!(h["region_id"], c["region_id"]);
        assert_eq!(h["mask_rle"], c["mask_rle"]);
        let (a, b) = (h["score"].as_f64().unwrap(), c["score"].as_f64().unwrap());
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    // Asked again: from the cache, same hits.
    let again = server.get("/api/search?q=a+dog+on+the+grass&k=5").json();
    assert_eq!(again["cached"], true);
    assert_eq!(again["hits"], v["hits"]);

    // Filters.
    let stats = server.get("/api/stats").json();
    assert_eq!(stats["index"]["rows"].as_u64().unwrap() as usize, rows);
    let label = stats["index"]["labels"]["top"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let labelled = stats["index"]["labels"]["top"][0]["regions"]
        .as_u64()
        .unwrap() as usize;
    let v = server
        .get(&format!(
            "/api/search?q=something&k=100&label={}",
            label.replace(' ', "+")
        ))
        .json();
    let hits = v["hits"].as_array().unwrap();
    assert_eq!(hits.len(), labelled.min(100));
    assert!(hits.iter().all(|h| h["label"] == label.as_str()), "{v}");
    let one_photo = hits[0]["image"].as_str().unwrap().to_string();
    let v = server
        .get(&format!("/api/search?q=something&k=1000&image={one_photo}"))
        .json();
    assert!(v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["image"] == one_photo.as_str()));
    assert_json_error(&server.get("/api/search?q=x&method=nope"), 400, "nope");

    // A batch, one entry of it bad: the others are answered.
    let body = br#"{"queries": ["a cat", {"q": "a person", "k": 3}, {"q": ""}], "k": 4}"#;
    let r = http_raw(
        &server.addr,
        "POST",
        b"/api/search",
        &[("Content-Type", "application/json")],
        body,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["hits"].as_array().unwrap().len(), 4);
    assert_eq!(results[1]["hits"].as_array().unwrap().len(), 3);
    assert_eq!(results[2]["status"], 400);

    // Regions, more like a region, pictures.
    let region = server.get("/api/regions/0").json();
    assert_eq!(region["row"], 0);
    let similar = server.get("/api/similar/0?k=5").json();
    let similar = similar["hits"].as_array().unwrap();
    assert_eq!(similar.len(), 5);
    assert!(similar.iter().all(|h| h["row"] != 0));
    let crop = server.get("/api/regions/0/crop.png");
    assert_eq!(crop.header("content-type"), Some("image/png"));
    let crop = image::load_from_memory(&crop.body).unwrap().to_rgba8();
    let rle: regionseek::masks::CocoRle =
        serde_json::from_value(region["mask_rle"].clone()).unwrap();
    let mask = regionseek::masks::Rle::from_coco(&rle).unwrap().decode();
    let opaque = crop.pixels().filter(|p| p.0[3] == 255).count();
    assert_eq!(opaque, mask.area(), "the crop's alpha is the mask");
    let overlay = server.get("/api/regions/0/overlay.jpg?size=2048");
    assert_eq!(overlay.header("content-type"), Some("image/jpeg"));
    let overlay = image::load_from_memory(&overlay.body).unwrap();
    assert_eq!(
        (overlay.width() as usize, overlay.height() as usize),
        (mask.width, mask.height)
    );
    let thumb = image::load_from_memory(&server.get("/api/regions/0/thumb.jpg").body).unwrap();
    assert!(thumb.width().max(thumb.height()) <= 320);

    // Hostile or wrong input: a 4xx with a JSON body, never a panic.
    for (target, status, mentions) in [
        ("/api/search?q=a+dog&k=0", 400, "k must be"),
        ("/api/search?q=a+dog&k=1000000000", 400, "k must be"),
        ("/api/search?q=a+dog&k=-3", 400, "k must be"),
        ("/api/search?q=", 400, "empty"),
        ("/api/search", 400, "empty"),
        ("/api/search?q=%20%20", 400, "empty"),
        ("/api/search?q=dog&lable=cat", 400, "unknown parameter"),
        ("/api/search?q=%FF%FEdog", 400, "UTF-8"),
        ("/api/search?q=dog&exact=maybe", 400, "exact"),
        ("/api/regions/18446744073709551616", 400, "whole number"),
        ("/api/regions/-1/crop.png", 400, "whole number"),
        ("/api/regions/0/passwd", 404, "no picture"),
        ("/api/similar/abc", 400, "whole number"),
        ("/api/regions/0/overlay.jpg?size=99999", 400, "size"),
        ("/api/nothing", 404, "no such endpoint"),
        ("/photos/../../etc/passwd", 404, "no such endpoint"),
    ] {
        assert_json_error(&server.get(target), status, mentions);
    }
    let long = format!("/api/search?q={}", "a".repeat(20_000));
    assert_json_error(&server.get(&long), 414, "query string");
    // Past 64 kB the HTTP parser itself refuses the request line, in the same JSON shape.
    let long = format!("/api/search?q={}", "a".repeat(100_000));
    assert_json_error(&server.get(&long), 414, "target is too long");
    let long = format!("/api/search?q={}", "a%20".repeat(1_500));
    assert_json_error(&server.get(&long), 400, "bytes");
    let big = vec![b'x'; 100_000];
    let r = http_raw(
        &server.addr,
        "POST",
        b"/api/search",
        &[("Content-Type", "application/json")],
        &big,
    );
    assert_json_error(&r, 413, "body");
    let r = http_raw(
        &server.addr,
        "POST",
        b"/api/search",
        &[],
        b"{\"queries\": 3}",
    );
    assert_json_error(&r, 400, "queries");
    let r = http_raw(&server.addr, "POST", b"/api/search", &[], b"\xff\xfe{");
    assert_json_error(&r, 400, "JSON");
    assert_json_error(&server.get(&format!("/api/regions/{rows}")), 404, "no row");
    let r = http_raw(&server.addr, "DELETE", b"/api/search", &[], b"");
    assert_json_error(&r, 405, "method");
    // Raw bytes no client would send: refused by the HTTP layer or the API, and the server lives on.
    let r = http_raw(&server.addr, "GET", b"/api/search?q=\xff\xfe", &[], b"");
    assert!((400..500).contains(&r.status), "{}", r.status);
    assert_eq!(server.get("/healthz").status, 200);

    // Metrics count what happened.
    let m = String::from_utf8(server.get("/metrics").body).unwrap();
    assert!(
        m.contains(
            "regionseek_http_requests_total{route=\"/api/search\",method=\"GET\",status=\"200\"}"
        ),
        "{m}"
    );
    assert!(m.contains(
        "regionseek_http_request_duration_seconds_bucket{route=\"/api/search\",le=\"+Inf\"}"
    ));
    assert!(m.contains(&format!("regionseek_index_rows {rows}")));
    // Asked twice: "a dog on the grass" and "something".
    assert!(m.contains("regionseek_text_cache_hits_total 2\n"), "{m}");

    // SIGTERM: a clean exit.
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn a_token_guards_everything_but_the_health_probe_and_exposure_needs_one() {
    let Some(f) = fixture() else { return };
    // Another machine could reach it: refused without a token.
    let (code, _, err) =
        run_regionseek(&["serve", f.index.to_str().unwrap(), "--addr", "0.0.0.0:0"]);
    assert_eq!(code, 1);
    assert!(err.contains("--token"), "{err}");

    let token = "s3cret-token-for-tests";
    let server = Server::start(&f.index, &["--token", token]);
    assert_json_error(&server.get("/api/search?q=dog"), 401, "token");
    assert_json_error(&server.get("/api/stats"), 401, "token");
    assert_eq!(server.get("/healthz").status, 200);
    let auth = format!("Bearer {token}");
    let r = http_raw(
        &server.addr,
        "GET",
        b"/api/search?q=dog&k=2",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200);
    let r = http_raw(
        &server.addr,
        "GET",
        b"/api/search?q=dog&k=2",
        &[("Authorization", "Bearer wrong-token-xx")],
        b"",
    );
    assert_eq!(r.status, 401);
    // A browser: /?token= sets a cookie and leaves the address bar.
    let r = server.get(&format!("/?q=a+dog&token={token}"));
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/?q=a+dog"));
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let r = http_raw(
        &server.addr,
        "GET",
        b"/api/stats",
        &[("Cookie", &cookie)],
        b"",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn the_page_runs_the_search_in_its_url_and_shows_every_hit_with_its_picture() {
    let Some(f) = fixture() else { return };
    let Some(browser) = chromium() else { return };
    let images = f.data.join("coco128/images");
    let server = Server::start(&f.index, &["--images", images.to_str().unwrap()]);
    let profile = tempfile::tempdir().unwrap();
    let url = server.url("/?q=a+dog+on+the+grass&k=12");
    let out = chromium_command(&browser, profile.path())
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("data-state=\"done\""),
        "the search did not finish: {dom}"
    );
    let cards = dom.matches("<article class=\"hit\"").count();
    assert_eq!(cards, 12, "{dom}");
    let loaded = dom.matches("data-loaded=\"1\"").count();
    assert_eq!(loaded, 12, "every hit's picture loads: {dom}");
    assert!(dom.contains("more like this"));
    // The search box shows the query from the URL.
    let api = server.get("/api/search?q=a+dog+on+the+grass&k=12").json();
    let first_row = api["hits"][0]["row"].as_u64().unwrap();
    assert!(
        dom.contains(&format!("<article class=\"hit\" data-row=\"{first_row}\"")),
        "{dom}"
    );

    // "More like this" has its own URL too.
    let out = chromium_command(&browser, profile.path())
        .arg("--dump-dom")
        .arg(server.url(&format!("/?like={first_row}&k=6")))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(dom.matches("<article class=\"hit\"").count(), 6, "{dom}");

    // One per photo: the API's photos in its order, each card saying how many more of its regions matched.
    let grouped = server
        .get("/api/search?q=a+dog+on+the+grass&k=6&group_by=photo")
        .json();
    let out = chromium_command(&browser, profile.path())
        .arg("--dump-dom")
        .arg(server.url("/?q=a+dog+on+the+grass&k=6&group_by=photo"))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let cards: Vec<u64> = dom
        .split("<article class=\"hit\" data-row=\"")
        .skip(1)
        .map(|c| c[..c.find('"').unwrap()].parse().unwrap())
        .collect();
    let api_rows: Vec<u64> = grouped["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["row"].as_u64().unwrap())
        .collect();
    assert_eq!(cards, api_rows, "{dom}");
    assert!(dom.contains("photos for"), "{dom}");
    let with_more = grouped["hits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["other_matches"].as_u64() > Some(0))
        .count();
    assert_eq!(
        dom.matches("in this photo</span>").count(),
        with_more,
        "{dom}"
    );

    // A date range goes to the API: COCO's photos carry no capture time, so a range keeps none, and the page
    // shows the server's words for why.
    let out = chromium_command(&browser, profile.path())
        .arg("--dump-dom")
        .arg(server.url("/?q=a+dog&after=2020-01-01&before=2020-12-31"))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(dom.contains("data-state=\"error\""), "{dom}");
    assert!(dom.contains("nothing to search"), "{dom}");

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium_command(&browser, profile.path())
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1280,900")
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        shot.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = image::open(&shot).unwrap();
    assert_eq!((png.width(), png.height()), (1280, 900));
    eprintln!("screenshot of the page: {}", shot.display());
}

#[test]
fn searches_during_an_index_run_see_whole_commits_only() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    let per_photo = regions_per_photo(&data);
    let index = build_index(&data, dir.path(), 2, 1);
    let server = Server::start(&index, &["--reload-ms", "20"]);
    let start_rows = server.get("/healthz").json()["rows"].as_u64().unwrap();

    let spec = spec(dir.path(), 1);
    let args = index_args(&data, &spec, &index, 10);
    let mut writer = bin()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = vec![start_rows];
    let mut checked = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = writer.try_wait().unwrap().is_some();
        let v = server.get("/api/search?q=a+photo&k=1000&exact=true").json();
        let rows = v["rows"].as_u64().unwrap();
        let hits = v["hits"].as_array().unwrap();
        // Every row is answered (k > rows), so each photo present must be there with all its regions.
        assert_eq!(hits.len() as u64, rows, "{v}");
        let mut by_photo: HashMap<&str, usize> = HashMap::new();
        for h in hits {
            assert!(h["row"].as_u64().unwrap() < rows);
            *by_photo.entry(h["image"].as_str().unwrap()).or_default() += 1;
        }
        for (photo, n) in &by_photo {
            assert_eq!(
                *n, per_photo[*photo],
                "{photo}: a partial commit was served"
            );
        }
        assert!(
            rows >= *seen.last().unwrap(),
            "rows went back: {seen:?} then {rows}"
        );
        if rows != *seen.last().unwrap() {
            seen.push(rows);
        }
        checked += 1;
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "the index run did not finish");
    }
    let out = writer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let final_rows = last_json(&String::from_utf8_lossy(&out.stdout))["rows_total"]
        .as_u64()
        .unwrap();
    // The last commit is picked up without a restart.
    let t = Instant::now();
    while server.get("/healthz").json()["rows"].as_u64().unwrap() != final_rows {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the server never saw the last commit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        seen.len() >= 3,
        "too few commits seen while the run went on: {seen:?} ({checked} searches)"
    );
    eprintln!("rows seen while indexing: {seen:?} over {checked} searches");
}

/// A copy of the shared fixture's index that a test may damage.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() && e.file_name() != "writer.lock" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[cfg(unix)]
#[test]
fn photos_outside_the_images_folder_are_refused_at_index_time_and_never_served() {
    let Some(f) = fixture() else { return };
    let dir = scratch("paths");
    let (images, secret) = (dir.join("images"), dir.join("secret"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&secret).unwrap();
    // One COCO128 photo and its annotations, under four names: inside the folder, climbing out of it,
    // absolute, and a symlink inside it that leads out.
    let coco: Value = serde_json::from_str(
        &std::fs::read_to_string(f.data.join("coco128/instances.json")).unwrap(),
    )
    .unwrap();
    let photo = coco["images"][0].clone();
    let name = photo["file_name"].as_str().unwrap();
    std::fs::copy(
        f.data.join("coco128/images").join(name),
        images.join("in.jpg"),
    )
    .unwrap();
    std::fs::copy(
        f.data.join("coco128/images").join(name),
        secret.join("x.jpg"),
    )
    .unwrap();
    std::os::unix::fs::symlink(secret.join("x.jpg"), images.join("link.jpg")).unwrap();
    let names = [
        "in.jpg".to_string(),
        "../secret/x.jpg".to_string(),
        secret.join("x.jpg").display().to_string(),
        "link.jpg".to_string(),
    ];
    let annotations: Vec<Value> = coco["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["image_id"] == photo["id"] && a["iscrowd"] == 0)
        .take(2)
        .cloned()
        .collect();
    let mut out =
        serde_json::json!({"images": [], "annotations": [], "categories": coco["categories"]});
    for (i, n) in names.iter().enumerate() {
        let mut p = photo.clone();
        p["id"] = (i + 1).into();
        p["file_name"] = n.clone().into();
        out["images"].as_array_mut().unwrap().push(p);
        for (j, a) in annotations.iter().enumerate() {
            let mut a = a.clone();
            a["id"] = (100 * (i + 1) + j).into();
            a["image_id"] = (i + 1).into();
            out["annotations"].as_array_mut().unwrap().push(a);
        }
    }
    let coco_path = dir.join("hostile.json");
    std::fs::write(&coco_path, out.to_string()).unwrap();
    let index = dir.join("idx");
    let spec = spec(&dir, 8);
    let args = coco_index_args(&images, &coco_path, &spec, &index);
    let (code, stdout, err) = run_regionseek(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    let report = last_json(&stdout);
    assert_eq!(report["input_issues"], 3, "{report}");
    assert_eq!(report["regions_added"], annotations.len(), "{report}");
    let errors = std::fs::read_to_string(index.join("errors.json")).unwrap();
    for why in ["climbs out", "absolute", "leads outside"] {
        assert!(
            errors.contains(why),
            "errors.json should say {why:?}: {errors}"
        );
    }

    // An index from before the check, holding rows that name photos outside the folder: made here by
    // copying the good rows under the bad names, as the index crate accepts any name.
    let good = regionseek::index::RegionIndex::open(&index).unwrap();
    let m = good.manifest().clone();
    let crafted = dir.join("crafted");
    let spec = regionseek::index::IndexSpec {
        dim: m.dim,
        model_id: m.model_id.clone(),
        weights_hash: m.weights_hash.clone(),
        hnsw: m.hnsw,
    };
    let mut w = regionseek::index::IndexWriter::create(&crafted, &spec).unwrap();
    let mut records = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let mut meta = good.rows()[0].clone();
        meta.image = n.clone();
        meta.image_hash = format!("{}-{i}", meta.image_hash);
        records.push(regionseek::index::RegionRecord {
            meta,
            embedding: good.embedding(0).unwrap(),
        });
    }
    w.append(records).unwrap();
    drop(w);
    let server = Server::start(&crafted, &["--images", images.to_str().unwrap()]);
    for (row, n) in names.iter().enumerate() {
        for picture in ["crop.png", "thumb.jpg?size=64", "overlay.jpg?size=64"] {
            let r = server.get(&format!("/api/regions/{row}/{picture}"));
            if row == 0 {
                assert_eq!(
                    r.status,
                    200,
                    "{n} {picture}: {}",
                    String::from_utf8_lossy(&r.body)
                );
                continue;
            }
            assert_json_error(&r, 404, &format!("row {row}"));
            let body = String::from_utf8_lossy(&r.body);
            assert!(
                !body.contains("secret"),
                "{n}: the answer names the path: {body}"
            );
        }
    }
    // `search --crop` reads photos through the same check.
    let crops = dir.join("crops");
    let (code, _, err) = run_regionseek(&[
        "search",
        crafted.to_str().unwrap(),
        "a photo",
        "--k",
        "4",
        "--crop",
        crops.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_dir(&crops).unwrap().count(), 1, "{err}");
    assert!(err.contains("outside the images folder"), "{err}");
}

/// Connections that send part of a request head and then nothing.
fn stall(addr: &str, n: usize) -> Vec<std::net::TcpStream> {
    use std::io::Write;
    (0..n)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /api/stats HTTP/1.1\r\nHost: localh")
                .unwrap();
            s
        })
        .collect()
}

/// Whether the server closed a stalled connection within `within` (EOF or a reset on read).
fn closed_within(s: &mut std::net::TcpStream, within: Duration) -> bool {
    use std::io::Read;
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            // What the server still had to say (a response) before closing.
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

#[test]
fn stalled_clients_are_cut_off_capped_and_do_not_hold_a_sigterm() {
    let Some(f) = fixture() else { return };
    let server = Server::start(
        &f.index,
        &[
            "--idle-timeout-s",
            "1",
            "--max-connections",
            "60",
            "--shutdown-grace-s",
            "2",
        ],
    );
    // Half a head: closed after the head timeout.
    let mut stalled = stall(&server.addr, 50);
    let t = Instant::now();
    for s in &mut stalled {
        assert!(
            closed_within(s, Duration::from_secs(5)),
            "a stalled connection stayed open"
        );
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Over the cap: answered 503 in JSON at once, while the capped ones wait.
    let _held = stall(&server.addr, 60);
    std::thread::sleep(Duration::from_millis(200));
    assert_json_error(&server.get("/healthz"), 503, "open connections");
    drop(_held);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.get("/healthz").status, 200);
    // An idle kept-alive connection is closed too.
    let mut idle = std::net::TcpStream::connect(&server.addr).unwrap();
    std::io::Write::write_all(
        &mut idle,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)),
        "an idle connection stayed open"
    );

    // SIGTERM with stalled connections: none of them has a request under way, so the server is out at once
    // (not after the grace period, nor after their head timeout).
    let server = Server::start(
        &f.index,
        &[
            "--idle-timeout-s",
            "30",
            "--max-connections",
            "300",
            "--shutdown-grace-s",
            "20",
        ],
    );
    let _stalled = stall(&server.addr, 200);
    std::thread::sleep(Duration::from_millis(300));
    // A request under way when the signal comes is answered.
    let addr = server.addr.clone();
    let under_way = std::thread::spawn(move || {
        let texts: Vec<String> = (0..24)
            .map(|i| format!("a photo of thing number {i} at dusk"))
            .collect();
        let body = serde_json::json!({"queries": texts, "k": 2}).to_string();
        http_raw(&addr, "POST", b"/api/search", &[], body.as_bytes())
    });
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let (code, log) = server.terminate();
    let took = t.elapsed();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        took < Duration::from_secs(3),
        "SIGTERM took {took:?}: {log}"
    );
    let answered = under_way.join().unwrap();
    assert_eq!(
        answered.status,
        200,
        "{}",
        String::from_utf8_lossy(&answered.body)
    );
    assert_eq!(answered.json()["results"].as_array().unwrap().len(), 24);
    eprintln!("SIGTERM with 200 stalled connections: exit after {took:?}");
}

#[test]
fn requests_addressed_to_another_host_or_from_another_origin_are_refused() {
    let Some(f) = fixture() else { return };
    let server = Server::start(&f.index, &["--allow-host", "photos.example"]);
    let with =
        |headers: &[(&str, &str)]| http_raw(&server.addr, "GET", b"/api/stats", headers, b"");
    assert_json_error(&with(&[("Host", "evil.example")]), 421, "evil.example");
    assert_json_error(&with(&[("Host", "evil.example:8080")]), 421, "evil.example");
    // The absolute form of a request target names the host as well.
    let foreign = http_raw(
        &server.addr,
        "GET",
        b"http://evil.example/api/stats",
        &[],
        b"",
    );
    assert_json_error(&foreign, 421, "evil.example");
    assert_json_error(&with(&[("Origin", "http://evil.example")]), 421, "Origin");
    assert_json_error(&with(&[("Origin", "null")]), 421, "Origin");
    assert_eq!(with(&[("Origin", "http://localhost:8080")]).status, 200);
    assert_eq!(with(&[("Origin", "https://photos.example")]).status, 200);
    assert_eq!(with(&[("Host", "Photos.Example.:443")]).status, 200);
    assert_eq!(with(&[("Host", &server.addr)]).status, 200);
    assert_eq!(with(&[("Host", "[::1]:8080")]).status, 200);
    assert_eq!(with(&[("Host", "app.localhost")]).status, 200);
    assert_json_error(&with(&[("Host", "10.1.2.3")]), 421, "10.1.2.3");
    assert_json_error(&with(&[("Host", "[::1]evil.example")]), 421, "Host");
    // Every value of a repeated header is checked, not just the first.
    assert_json_error(
        &with(&[("Host", "localhost"), ("Host", "evil.example")]),
        421,
        "evil.example",
    );
    assert_json_error(
        &with(&[
            ("Origin", "http://localhost"),
            ("Origin", "http://evil.example"),
        ]),
        421,
        "evil.example",
    );
}

#[test]
fn abandoned_queries_are_dropped_and_a_fresh_one_is_answered_at_once() {
    let Some(f) = fixture() else { return };
    let server = Server::start(&f.index, &["--timeout-s", "2", "--max-queued-texts", "600"]);
    // Four floods of distinct long texts, each far more than the text tower embeds in a second.
    let floods: Vec<_> = (0..4)
        .map(|flood| {
            let addr = server.addr.clone();
            std::thread::spawn(move || {
                let queries: Vec<String> = (0..256)
                    .map(|i| {
                        format!(
                            "flood {flood} text {i}: {}",
                            "a photo of many things ".repeat(3)
                        )
                    })
                    .collect();
                let body = serde_json::json!({"queries": queries, "k": 1}).to_string();
                http_raw(
                    &addr,
                    "POST",
                    b"/api/search",
                    &[("Content-Type", "application/json")],
                    body.as_bytes(),
                )
            })
        })
        .collect();
    let answers: Vec<HttpResponse> = floods.into_iter().map(|t| t.join().unwrap()).collect();
    let timed_out = answers.iter().filter(|r| r.status == 408).count();
    assert!(
        timed_out >= 1,
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in answers.iter().filter(|r| r.status == 408) {
        assert_json_error(r, 408, "--timeout-s");
    }
    let t = Instant::now();
    let fresh = server.get("/api/search?q=a+red+bicycle&k=3");
    let took = t.elapsed();
    assert_eq!(
        fresh.status,
        200,
        "{}",
        String::from_utf8_lossy(&fresh.body)
    );
    assert!(
        took < Duration::from_secs(2),
        "a fresh query took {took:?} after the flood"
    );
    eprintln!("fresh query after 4 timed-out floods of 256 texts: {took:?}");
    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    let abandoned: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("regionseek_text_abandoned_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(abandoned > 0.0, "{metrics}");
}

#[test]
fn answers_stay_small_metrics_stay_closed_and_hyper_errors_are_json() {
    let Some(f) = fixture() else { return };
    let server = Server::start(&f.index, &[]);
    // 256 queries × k 1000 from a 2 kB body: refused before any work, naming the limit.
    let body = serde_json::json!({"queries": vec!["a dog"; 256], "k": 1000}).to_string();
    let r = http_raw(&server.addr, "POST", b"/api/search", &[], body.as_bytes());
    assert_json_error(&r, 400, "at most 5000");
    // A body declared over the limit is refused at once, not after the timeout.
    let t = Instant::now();
    let r = http_raw(
        &server.addr,
        "POST",
        b"/api/search",
        &[("Content-Length", "99999999999")],
        b"",
    );
    assert_json_error(&r, 413, "bytes");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Unknown fields are refused in a POST as in a query string.
    let body = serde_json::json!({"queries": ["a dog"], "kk": 3}).to_string();
    assert_json_error(
        &http_raw(&server.addr, "POST", b"/api/search", &[], body.as_bytes()),
        400,
        "\"kk\"",
    );
    let body = serde_json::json!({"queries": [{"q": "a dog", "exactly": true}]}).to_string();
    let r = http_raw(&server.addr, "POST", b"/api/search", &[], body.as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["results"][0]["status"], 400, "{}", r.json());
    // Invented methods: 405 naming what the endpoint takes, and one `other` label in the metrics.
    for m in ["FOO", "BAR", "BAZ"] {
        let r = http_raw(&server.addr, m, b"/api/search?q=dog", &[], b"");
        assert_json_error(&r, 405, "GET");
    }
    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    assert!(
        !metrics.contains("FOO") && !metrics.contains("BAZ"),
        "{metrics}"
    );
    assert!(metrics.contains("method=\"other\""), "{metrics}");
    // What hyper answers by itself: JSON as well.
    let long_header = "x".repeat(200 * 1024);
    let r = http_raw(
        &server.addr,
        "GET",
        b"/healthz",
        &[("X-Long", &long_header)],
        b"",
    );
    assert_json_error(&r, 431, "headers are too large");
    let r = http_raw(&server.addr, "GET", b"/he lthz", &[], b"");
    assert_json_error(&r, 400, "not valid HTTP");
    // No absolute server path in the stats.
    let stats = server.get("/api/stats");
    let text = String::from_utf8_lossy(&stats.body);
    assert!(!text.contains(f.index.to_str().unwrap()), "{text}");
    assert_eq!(stats.json()["index_dir"], "idx");
}

#[test]
fn a_token_is_found_whatever_the_scheme_case_or_a_stale_cookie_beside_it() {
    let Some(f) = fixture() else { return };
    for bad in [
        "semi;colon-token",
        "amp&ersand-token",
        "hash#token-xxxx",
        "short",
    ] {
        let (code, _, err) = run_regionseek(&["serve", f.index.to_str().unwrap(), "--token", bad]);
        assert_eq!(code, 1, "{bad}");
        assert!(err.contains("at least 8 characters"), "{err}");
    }
    let token = "Good_token-0123.~";
    let server = Server::start(&f.index, &["--token", token]);
    let ok = |headers: &[(&str, &str)]| {
        http_raw(&server.addr, "GET", b"/api/stats", headers, b"").status
    };
    assert_eq!(ok(&[("Authorization", &format!("bearer {token}"))]), 200);
    assert_eq!(ok(&[("Authorization", &format!("BEARER  {token}"))]), 200);
    let cookies = format!("regionseek_token=stale-old-token; regionseek_token={token}");
    assert_eq!(ok(&[("Cookie", &cookies)]), 200);
    assert_eq!(ok(&[("Cookie", "regionseek_token=stale-old-token")]), 401);
}

#[test]
fn a_served_index_truncated_or_replaced_under_the_server_keeps_answering() {
    let Some(f) = fixture() else { return };
    let dir = scratch("sigbus");
    let index = dir.join("idx");
    copy_dir(&f.index, &index);
    let server = Server::start(&index, &[]);
    let before = server.get("/api/search?q=a+dog&k=5&exact=true").json();
    let vectors: Vec<PathBuf> = std::fs::read_dir(&index)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "vectors"))
        .collect();
    assert!(!vectors.is_empty(), "the fixture index has a graph dump");
    for v in &vectors {
        std::fs::OpenOptions::new()
            .write(true)
            .open(v)
            .unwrap()
            .set_len(100)
            .unwrap();
    }
    // Exact (every vector read) and graph searches, and a similar-region lookup, after the truncation.
    let after = server.get("/api/search?q=a+dog&k=5&exact=true");
    assert_eq!(after.status, 200);
    assert_eq!(after.json()["hits"], before["hits"]);
    assert_eq!(server.get("/api/search?q=a+dog&k=5&ef=64").status, 200);
    assert_eq!(server.get("/api/similar/0?k=3").status, 200);
    // The same bytes copied over the whole folder (what `cp -r` of another index does) changes nothing either.
    copy_dir(&f.index, &index);
    assert_eq!(server.get("/api/search?q=a+dog&k=5&exact=true").status, 200);
    for v in &vectors {
        std::fs::OpenOptions::new()
            .write(true)
            .open(v)
            .unwrap()
            .set_len(100)
            .unwrap();
    }
    // `verify` names the damage.
    let (code, out, err) = run_regionseek(&["verify", index.to_str().unwrap(), "--json"]);
    assert_ne!(code, 0, "{out}");
    let name = vectors[0].file_name().unwrap().to_str().unwrap();
    assert!(out.contains(name) || err.contains(name), "{out}{err}");
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0), "{log}");
}

/// A field path (`index.rows`) in a JSON value.
fn has_field(v: &Value, path: &str) -> bool {
    path.split('.').try_fold(v, |v, k| v.get(k)).is_some()
}

#[test]
fn every_json_field_the_readme_names_is_in_the_answers() {
    let Some(f) = fixture() else { return };
    let text = readme::readme();
    let server = Server::start(&f.index, &[]);
    let search = server.get("/api/search?q=a+dog&k=3").json();
    let cli = cli_search(&f.index, "a dog", 3);
    let mut checked = 0;
    let mut check = |anchor: &str, answers: &[&Value]| {
        let fields = readme::fields_after(&text, anchor);
        assert!(fields.len() >= 3, "{anchor}: {fields:?}");
        for v in answers {
            for field in &fields {
                assert!(
                    has_field(v, field),
                    "the README names {field} after {anchor:?}, but {v} has none"
                );
                checked += 1;
            }
        }
    };
    check("`GET /api/search?q=TEXT", &[&search]);
    let hits: Vec<&Value> = search["hits"]
        .as_array()
        .unwrap()
        .iter()
        .chain(cli["hits"].as_array().unwrap())
        .collect();
    check("region hits `", &hits);
    check("`GET /api/stats`: ", &[&server.get("/api/stats").json()]);
    check("`GET /healthz` (", &[&server.get("/healthz").json()]);
    assert!(checked > 40, "{checked}");
}

#[test]
fn slow_bodies_do_not_hold_slots_and_every_endpoint_keeps_to_the_hit_budget() {
    use std::io::Write;
    let Some(f) = fixture() else { return };
    let server = Server::start(
        &f.index,
        &[
            "--max-concurrent",
            "2",
            "--idle-timeout-s",
            "1",
            "--max-hits",
            "5",
        ],
    );
    // Four POSTs that declare a body and send one byte of it: more than the two handler slots.
    let mut slow: Vec<std::net::TcpStream> = (0..4)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
            s.write_all(
                b"POST /api/search HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{",
            )
            .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    assert_eq!(server.get("/api/stats").status, 200);
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "slots were held: {:?}",
        t.elapsed()
    );
    for s in &mut slow {
        let mut raw = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = std::io::Read::read_to_end(s, &mut raw);
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("--idle-timeout-s"), "{text}");
    }
    // GET endpoints keep to --max-hits as POST batches do.
    assert_json_error(&server.get("/api/search?q=a+dog&k=30"), 400, "--max-hits");
    assert_json_error(&server.get("/api/similar/0?k=30"), 400, "--max-hits");
    assert_eq!(server.get("/api/search?q=a+dog&k=5").status, 200);
}

/// Checks a JSON value against a schema of an OpenAPI 3.1 document, in the subset utoipa writes: `$ref`,
/// `type` (one or several, "null" among them), `properties` and `required`, `items`, `allOf`, `oneOf`,
/// `enum`, `minimum` and `maximum`. Stricter than JSON Schema in one way: an object may hold no property its
/// schema does not list, so that a field the server adds without describing it is caught.
struct SchemaCheck<'a> {
    doc: &'a Value,
}

impl SchemaCheck<'_> {
    fn resolve<'s>(&'s self, schema: &'s Value) -> &'s Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("a $ref outside the schemas: {r}"));
                let target = &self.doc["components"]["schemas"][name];
                assert!(!target.is_null(), "{r} is not in the document");
                self.resolve(target)
            }
            None => schema,
        }
    }

    /// Every property name a schema lists, through `$ref` and `allOf`; None when it lists none.
    fn properties(&self, schema: &Value) -> Option<Vec<String>> {
        let schema = self.resolve(schema);
        let mut names: Vec<String> = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        for part in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            names.extend(self.properties(part).unwrap_or_default());
        }
        (!names.is_empty()).then_some(names)
    }

    fn check(&self, v: &Value, schema: &Value, at: &str) -> Result<(), String> {
        self.check_part(v, schema, at, true)
    }

    fn check_part(&self, v: &Value, schema: &Value, at: &str, whole: bool) -> Result<(), String> {
        let schema = self.resolve(schema);
        if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
            for p in parts {
                self.check_part(v, p, at, false)?;
            }
        }
        if let Some(choices) = schema.get("oneOf").and_then(Value::as_array) {
            let fits: Vec<Result<(), String>> =
                choices.iter().map(|c| self.check(v, c, at)).collect();
            let n = fits.iter().filter(|f| f.is_ok()).count();
            if n != 1 {
                return Err(format!(
                    "{at}: fits {n} of the oneOf choices, not one: {:?}",
                    fits.iter()
                        .filter_map(|f| f.as_ref().err())
                        .collect::<Vec<_>>()
                ));
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            if !allowed.contains(v) {
                return Err(format!("{at}: {v} is not one of {allowed:?}"));
            }
        }
        if let Some(t) = schema.get("type") {
            let types: Vec<&str> = match t {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                other => return Err(format!("{at}: a type {other} this check does not know")),
            };
            let fits = |t: &str| match t {
                "null" => v.is_null(),
                "boolean" => v.is_boolean(),
                "string" => v.is_string(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "array" => v.is_array(),
                "object" => v.is_object(),
                _ => false,
            };
            if !types.iter().any(|t| fits(t)) {
                return Err(format!("{at}: {v} is not of type {types:?}"));
            }
        }
        if let (Some(n), Some(lo)) = (v.as_f64(), schema.get("minimum").and_then(Value::as_f64)) {
            if n < lo {
                return Err(format!("{at}: {n} is under the minimum {lo}"));
            }
        }
        if let (Some(n), Some(hi)) = (v.as_f64(), schema.get("maximum").and_then(Value::as_f64)) {
            if n > hi {
                return Err(format!("{at}: {n} is over the maximum {hi}"));
            }
        }
        if let Some(items) = v.as_array() {
            if let Some(item) = schema.get("items") {
                for (i, x) in items.iter().enumerate() {
                    self.check(x, item, &format!("{at}[{i}]"))?;
                }
            }
        }
        if let Some(fields) = v.as_object() {
            for name in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = name.as_str().unwrap_or_default();
                if !fields.contains_key(name) {
                    return Err(format!("{at}: the required {name:?} is missing"));
                }
            }
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, sub) in props {
                    if let Some(x) = fields.get(name) {
                        self.check(x, sub, &format!("{at}.{name}"))?;
                    }
                }
            }
            if whole {
                if let Some(listed) = self.properties(schema) {
                    if let Some(extra) = fields.keys().find(|k| !listed.contains(k)) {
                        return Err(format!("{at}: {extra:?} is not in the schema"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The schema of an endpoint's JSON answer with this status.
    fn response(&self, path: &str, method: &str, status: u16) -> &Value {
        let s = &self.doc["paths"][path][method]["responses"][status.to_string()]["content"]
            ["application/json"]["schema"];
        assert!(
            !s.is_null(),
            "the document has no JSON answer {status} for {method} {path}"
        );
        s
    }
}

#[test]
fn the_openapi_document_describes_every_json_answer() {
    let Some(f) = fixture() else { return };
    let server = Server::start(&f.index, &[]);
    let r = server.get("/api/openapi.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let check = SchemaCheck { doc: &doc };
    let post = |body: &str| http_raw(&server.addr, "POST", b"/api/search", &[], body.as_bytes());
    let answers = [
        ("/api/search", "get", server.get("/api/search?q=a+dog&k=3")),
        (
            "/api/search",
            "get",
            server.get("/api/search?q=a+dog&k=3&label=dog&ef=8"),
        ),
        ("/api/search", "get", server.get("/api/search?q=")),
        (
            "/api/search",
            "get",
            server.get("/api/search?q=dog&lable=x"),
        ),
        (
            "/api/search",
            "post",
            post(
                r#"{"queries": ["a cat", {"q": "a person", "k": 2, "exact": true}, {"q": ""}], "k": 3}"#,
            ),
        ),
        ("/api/search", "post", post(r#"{"queries": 3}"#)),
        (
            "/api/similar/{row}",
            "get",
            server.get("/api/similar/0?k=4"),
        ),
        ("/api/similar/{row}", "get", server.get("/api/similar/abc")),
        ("/api/regions/{row}", "get", server.get("/api/regions/0")),
        (
            "/api/regions/{row}",
            "get",
            server.get("/api/regions/99999999"),
        ),
        (
            "/api/regions/{row}/{picture}",
            "get",
            server.get("/api/regions/0/crop.png"),
        ),
        ("/api/stats", "get", server.get("/api/stats")),
        ("/healthz", "get", server.get("/healthz")),
        (
            "/api/search",
            "get",
            server.get("/api/search?q=a+dog&k=3&group_by=photo&min_score=-1"),
        ),
        (
            "/api/search",
            "get",
            server.get("/api/search?q=a+dog&min_score=2"),
        ),
    ];
    for (path, method, r) in &answers {
        let schema = check.response(path, method, r.status);
        let v = r.json();
        if let Err(e) = check.check(&v, schema, "$") {
            panic!(
                "{method} {path} answered {} off its schema: {e}\n{v}",
                r.status
            );
        }
    }
    // Grouped by photo: one hit per photo, each with the count of its other matching regions.
    let grouped = answers[answers.len() - 2].2.json();
    let photos: Vec<&str> = grouped["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["image"].as_str().unwrap())
        .collect();
    assert!(!photos.is_empty(), "{grouped}");
    assert_eq!(
        photos.len(),
        photos
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        "a photo twice: {grouped}"
    );
    assert!(grouped["hits"][0]["other_matches"].is_u64(), "{grouped}");
    let refused = &answers[answers.len() - 1].2;
    assert_eq!(refused.status, 400);
    assert!(refused.json()["error"]
        .as_str()
        .unwrap()
        .contains("min_score"));

    // The batch's per-query error is one of its results' choices.
    let batch = answers[4].2.json();
    assert_eq!(batch["results"][2]["status"], 400, "{batch}");

    // The check can fail: a wrong type deep in a hit, a required field gone, a field the document does not
    // name, and a number in a batch result that fits neither choice.
    let search_schema = check.response("/api/search", "get", 200);
    let good = answers[0].2.json();
    assert!(check.check(&good, search_schema, "$").is_ok());
    let mut wrong = good.clone();
    wrong["hits"][0]["score"] = Value::from("high");
    assert!(check
        .check(&wrong, search_schema, "$")
        .unwrap_err()
        .contains("score"));
    let mut wrong = good.clone();
    wrong.as_object_mut().unwrap().remove("query");
    assert!(check
        .check(&wrong, search_schema, "$")
        .unwrap_err()
        .contains("query"));
    let mut wrong = good.clone();
    wrong["hits"][0]["mask_rle"]["extra"] = Value::from(1);
    assert!(check
        .check(&wrong, search_schema, "$")
        .unwrap_err()
        .contains("extra"));
    let mut wrong = batch.clone();
    wrong["results"][0] = Value::from(7);
    let batch_schema = check.response("/api/search", "post", 200);
    assert!(check
        .check(&wrong, batch_schema, "$")
        .unwrap_err()
        .contains("oneOf"));
}

/// The photos (sorted) of an answer's hits.
fn hit_photos(answer: &Value) -> Vec<String> {
    let mut names: Vec<String> = answer["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("no hits: {answer}"))
        .iter()
        .map(|h| h["image"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn searches_take_the_photo_metadata_filters_as_parameters_and_refuse_bad_ones_in_words() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    exif_photos(&photos);
    let index = tmp.path().join("index");
    let args = crate::pipeline::library_index_args(
        &photos,
        &index,
        &crate::pipeline::small_library_spec(tmp.path()),
    );
    let (code, _, err) = run_regionseek(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    let server = Server::start(&index, &[]);
    let search = |params: &str| {
        let r = server.get(&format!(
            "/api/search?q=a+photo&k=100&group_by=photo&{params}"
        ));
        assert_eq!(
            r.status,
            200,
            "{params}: {}",
            String::from_utf8_lossy(&r.body)
        );
        hit_photos(&r.json())
    };
    assert_eq!(search("after=2024-01-01"), ["paris.jpg", "phone.jpg"]);
    assert_eq!(
        search("before=2024-01-01T00:00:00%2B01:00"),
        ["newyork.jpg"]
    );
    assert_eq!(search("camera=CANON"), ["paris.jpg"]);
    assert_eq!(search("near=40.7,-74.0,50"), ["newyork.jpg"]);
    assert_eq!(
        search("after=&camera=&near="),
        search(""),
        "empty means no filter"
    );
    let r = server.get("/api/search?q=a+photo&k=1&camera=canon");
    let hit = &r.json()["hits"][0];
    assert_eq!(hit["taken_at"], "2024-05-01T14:03:00+02:00");
    assert_eq!(hit["camera"], "Canon EOS R5");
    // The same words for similar regions and in a batch (per query, or for the whole batch).
    let row = hit["row"].as_u64().unwrap();
    let r = server.get(&format!(
        "/api/similar/{row}?k=100&group_by=photo&camera=nikon"
    ));
    assert_eq!(hit_photos(&r.json()), ["newyork.jpg"]);
    let r = http_raw(
        &server.addr,
        "POST",
        b"/api/search",
        &[],
        br#"{"queries": [{"q": "a", "camera": "iphone"}, "b"], "after": "2024-01-01", "k": 100, "group_by": "photo"}"#,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let answers = r.json();
    let answers = answers["results"]
        .as_array()
        .or(answers.as_array())
        .unwrap()
        .clone();
    assert_eq!(hit_photos(&answers[0]), ["phone.jpg"]);
    assert_eq!(hit_photos(&answers[1]), ["paris.jpg", "phone.jpg"]);
    // Bad values: 400 with words that name the parameter.
    for (params, says) in [
        ("after=yesterday", "after must be a date"),
        ("before=2024-02-30", "before must be a date"),
        ("near=48,2", "near must be LAT,LON,KM"),
        ("near=0,0,-5", "near must be LAT,LON,KM"),
        ("after=2024-02-01&before=2024-01-01", "is not before"),
    ] {
        assert_json_error(&server.get(&format!("/api/search?q=a&{params}")), 400, says);
    }
    // A filter that keeps nothing is the client's mistake too, said with what the photos hold.
    assert_json_error(
        &server.get("/api/search?q=a&camera=leica"),
        400,
        "Canon EOS R5",
    );
    // The OpenAPI document lists the parameters and the hit fields.
    let doc = server.get("/api/openapi.json").json();
    let params: Vec<&str> = doc["paths"]["/api/search"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in ["after", "before", "camera", "near"] {
        assert!(params.contains(&p), "{p} not in {params:?}");
    }
    let hit_props = &doc["components"]["schemas"]["Hit"]["properties"];
    assert!(
        hit_props["taken_at"].is_object() && hit_props["camera"].is_object(),
        "{hit_props}"
    );
}
