//! CLIP tokenization: a model folder's Hugging Face `tokenizer.json` when it has one, otherwise CLIP's own
//! byte-level BPE (`bpe_simple_vocab_16e6.txt.gz`, as OpenAI CLIP and open_clip tokenise).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use regex::Regex;

pub const BPE_FILE: &str = "bpe_simple_vocab_16e6.txt.gz";

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("no CLIP BPE vocabulary found (looked in: {looked}); run ./setup.sh, which extracts {BPE_FILE} from the open_clip_torch wheel, or set REGIONSEEK_BPE to its path")]
    NotFound { looked: String },
    #[error("cannot read tokenizer file {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("tokenizer failed on {text:?}: {message}")]
    Encode { text: String, message: String },
}

/// Where the BPE vocabulary may live, in the order searched.
pub fn bpe_candidates(model_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(p) = std::env::var("REGIONSEEK_BPE") {
        v.push(PathBuf::from(p));
    }
    if let Some(d) = model_dir {
        v.push(d.join(BPE_FILE));
    }
    v.push(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("vendor")
            .join(BPE_FILE),
    );
    if let Some(home) = std::env::var_os("HOME") {
        v.push(PathBuf::from(home).join(".cache/regionseek").join(BPE_FILE));
    }
    v
}

pub enum Tokenizer {
    HuggingFace(Box<tokenizers::Tokenizer>),
    Bpe(ClipBpe),
}

impl Tokenizer {
    /// The folder's `tokenizer.json` if present, else the CLIP BPE vocabulary from the usual places.
    pub fn for_model_dir(model_dir: Option<&Path>) -> Result<Self, TokenizerError> {
        if let Some(d) = model_dir {
            let tj = d.join("tokenizer.json");
            if tj.is_file() {
                let t =
                    tokenizers::Tokenizer::from_file(&tj).map_err(|e| TokenizerError::Read {
                        path: tj.clone(),
                        message: e.to_string(),
                    })?;
                return Ok(Tokenizer::HuggingFace(Box::new(t)));
            }
        }
        let candidates = bpe_candidates(model_dir);
        match candidates.iter().find(|p| p.is_file()) {
            Some(p) => Ok(Tokenizer::Bpe(ClipBpe::from_gz(p)?)),
            None => Err(TokenizerError::NotFound {
                looked: candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// How many ids a text takes with its start and end tokens, before any cut to the context length.
    pub fn token_count(&self, text: &str) -> Result<usize, TokenizerError> {
        Ok(match self {
            Tokenizer::Bpe(b) => b.encode(text).len() + 2,
            Tokenizer::HuggingFace(t) => t
                .encode(text, true)
                .map_err(|e| TokenizerError::Encode {
                    text: text.to_string(),
                    message: e.to_string(),
                })?
                .get_ids()
                .len(),
        })
    }

    /// One row of `context_length` ids: SOT, the text's tokens, EOT, zero padding; a text that is too
    /// long is cut and its last id replaced by EOT, as CLIP does.
    pub fn encode(&self, text: &str, context_length: usize) -> Result<Vec<u32>, TokenizerError> {
        let (mut ids, eot) = match self {
            Tokenizer::Bpe(b) => {
                let mut ids = vec![b.sot];
                ids.extend(b.encode(text));
                ids.push(b.eot);
                (ids, b.eot)
            }
            Tokenizer::HuggingFace(t) => {
                let enc = t.encode(text, true).map_err(|e| TokenizerError::Encode {
                    text: text.to_string(),
                    message: e.to_string(),
                })?;
                let ids = enc.get_ids().to_vec();
                let eot = t
                    .token_to_id("<|endoftext|>")
                    .unwrap_or(*ids.last().unwrap_or(&49407));
                (ids, eot)
            }
        };
        if ids.len() > context_length {
            ids.truncate(context_length);
            if let Some(last) = ids.last_mut() {
                *last = eot;
            }
        }
        ids.resize(context_length, 0);
        Ok(ids)
    }
}

pub struct ClipBpe {
    encoder: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    byte_encoder: [char; 256],
    pattern: Regex,
    cache: Mutex<HashMap<String, Vec<u32>>>,
    pub sot: u32,
    pub eot: u32,
}

fn bytes_to_unicode() -> [char; 256] {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut extra = 0;
    for b in 0..256u32 {
        let c = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        table[b as usize] = char::from_u32(c).expect("valid code point");
    }
    table
}

/// The order of `list(bytes_to_unicode().values())` in CLIP: printable bytes first, then the rest.
fn base_vocab(table: &[char; 256]) -> Vec<String> {
    let mut order: Vec<u8> = (b'!'..=b'~').collect();
    order.extend(0xA1..=0xAC);
    order.extend(0xAE..=0xFF);
    let rest: Vec<u8> = (0..=255u8).filter(|b| !order.contains(b)).collect();
    order.extend(rest);
    order
        .into_iter()
        .map(|b| table[b as usize].to_string())
        .collect()
}

fn html_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let re =
        Regex::new(r"&(#[0-9]+|#[xX][0-9a-fA-F]+|amp|lt|gt|quot|apos|nbsp);").expect("valid regex");
    re.replace_all(s, |c: &regex::Captures| {
        let e = &c[1];
        let ch = match e {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            _ => e[1..].parse().ok().and_then(char::from_u32),
        };
        ch.map(String::from).unwrap_or_else(|| c[0].to_string())
    })
    .into_owned()
}

/// CLIP's text cleaning: HTML entities unescaped twice, whitespace collapsed, lower case. (CLIP also runs
/// ftfy's mojibake repair, which only matters for broken encodings and is not reproduced.)
pub fn clean_text(text: &str) -> String {
    let t = html_unescape(&html_unescape(text));
    t.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

impl ClipBpe {
    pub fn from_gz(path: &Path) -> Result<Self, TokenizerError> {
        let err = |m: String| TokenizerError::Read {
            path: path.to_path_buf(),
            message: m,
        };
        let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .map_err(|e| err(e.to_string()))?;
        Self::from_merges_text(&text).map_err(err)
    }

    pub fn from_merges_text(text: &str) -> Result<Self, String> {
        let lines: Vec<&str> = text.split('\n').collect();
        let end = (49152 - 256 - 2 + 1).min(lines.len());
        let merges: Vec<(String, String)> = lines[1.min(lines.len())..end]
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut it = l.split_whitespace();
                match (it.next(), it.next()) {
                    (Some(a), Some(b)) => Ok((a.to_string(), b.to_string())),
                    _ => Err(format!("malformed merge line {l:?}")),
                }
            })
            .collect::<Result<_, _>>()?;
        let byte_encoder = bytes_to_unicode();
        let mut vocab = base_vocab(&byte_encoder);
        let with_end: Vec<String> = vocab.iter().map(|v| format!("{v}</w>")).collect();
        vocab.extend(with_end);
        vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.push("<start_of_text>".into());
        vocab.push("<end_of_text>".into());
        let encoder: HashMap<String, u32> = vocab
            .into_iter()
            .enumerate()
            .map(|(i, v)| (v, i as u32))
            .collect();
        let ranks = merges
            .into_iter()
            .enumerate()
            .map(|(i, m)| (m, i))
            .collect();
        let pattern = Regex::new(r"(?i)<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")
            .expect("valid regex");
        let sot = encoder["<start_of_text>"];
        let eot = encoder["<end_of_text>"];
        Ok(Self {
            encoder,
            ranks,
            byte_encoder,
            pattern,
            cache: Mutex::new(HashMap::new()),
            sot,
            eot,
        })
    }

    fn bpe(&self, token: &str) -> Vec<u32> {
        if let Some(ids) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
        {
            return ids.clone();
        }
        let chars: Vec<char> = token.chars().collect();
        let mut word: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        if let Some(last) = word.last_mut() {
            last.push_str("</w>");
        }
        loop {
            let best = word
                .windows(2)
                .filter_map(|p| {
                    self.ranks
                        .get(&(p[0].clone(), p[1].clone()))
                        .map(|&r| (r, p[0].clone(), p[1].clone()))
                })
                .min_by_key(|(r, _, _)| *r);
            let Some((_, first, second)) = best else {
                break;
            };
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == first && word[i + 1] == second {
                    merged.push(format!("{first}{second}"));
                    i += 2;
                } else {
                    merged.push(word[i].clone());
                    i += 1;
                }
            }
            word = merged;
            if word.len() == 1 {
                break;
            }
        }
        // Every symbol of a merged word is in the vocabulary by construction (bytes + merges).
        let ids: Vec<u32> = word
            .iter()
            .filter_map(|w| self.encoder.get(w).copied())
            .collect();
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_string(), ids.clone());
        ids
    }

    /// Token ids of a text, without SOT/EOT.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let cleaned = clean_text(text);
        let mut out = Vec::new();
        for m in self.pattern.find_iter(&cleaned) {
            let piece = m.as_str();
            if let Some(&id) = self
                .encoder
                .get(piece)
                .filter(|_| piece.starts_with("<") && piece.ends_with("_text>"))
            {
                out.push(id);
                continue;
            }
            let mapped: String = piece
                .bytes()
                .map(|b| self.byte_encoder[b as usize])
                .collect();
            out.extend(self.bpe(&mapped));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection_onto_printable_chars() {
        let t = bytes_to_unicode();
        let mut seen: Vec<char> = t.to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 256);
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[b' ' as usize], 'Ġ');
    }

    #[test]
    fn cleaning_unescapes_collapses_and_lowercases() {
        assert_eq!(clean_text("  A  &amp;amp;\tDog\n"), "a & dog");
    }

    #[test]
    fn merges_apply_by_rank() {
        let bpe = ClipBpe::from_merges_text("#version\nd o\ndo g</w>\n").unwrap();
        let ids = bpe.encode("dog");
        assert_eq!(ids, vec![*bpe.encoder.get("dog</w>").unwrap()]);
    }
}
