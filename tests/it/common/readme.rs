//! The README read as a specification: the `regionseek` command lines in its code, the defaults its brackets
//! state, and the JSON fields it lists, so that tests can hold the text to what the binary does.

use std::collections::HashMap;

pub fn readme() -> String {
    std::fs::read_to_string(super::root().join("README.md")).expect("README.md")
}

/// The text inside backticks (inline spans, which may run over several lines, and fenced blocks line by
/// line), with line breaks as spaces.
pub fn code_spans(text: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut prose = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            spans.push(line.to_string());
        } else {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    for (i, part) in prose.split('`').enumerate() {
        if i % 2 == 1 {
            spans.push(part.replace('\n', " "));
        }
    }
    spans
}

/// One `regionseek` command line of the README: the subcommand (two words for `weights list`) and the
/// tokens after it, as written (brackets included).
#[derive(Debug, Clone)]
pub struct CommandLine {
    pub words: Vec<String>,
    pub tokens: Vec<String>,
    pub text: String,
}

/// Every command line in the README's code: after `regionseek ` or `cargo run --release -- `, up to a
/// shell's `&&`, `;` or `|` between commands.
pub fn command_lines(text: &str, subcommands_with_children: &[&str]) -> Vec<CommandLine> {
    let mut out = Vec::new();
    for span in code_spans(text) {
        for command in span.split("&&").flat_map(|c| c.split("; ")) {
            let rest = if let Some((before, after)) = command.split_once("cargo run --release -- ")
            {
                let _ = before;
                Some(after)
            } else {
                find_word(command, "regionseek").map(|i| &command[i + "regionseek".len()..])
            };
            let Some(rest) = rest else { continue };
            if !rest.starts_with(' ') && !rest.is_empty() && !command.contains("cargo run") {
                continue;
            }
            let tokens: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
            let Some(first) = tokens.first() else {
                continue;
            };
            // A word, not a flag or a placeholder: `regionseek` alone in prose-like code is no command line.
            if !first.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                continue;
            }
            let mut words = vec![first.trim_end_matches([',', '.', ':', ')']).to_string()];
            let mut skip = 1;
            if subcommands_with_children.contains(&words[0].as_str()) {
                if let Some(child) = tokens.get(1) {
                    words.push(child.split('|').next().unwrap().to_string());
                    skip = 2;
                }
            }
            out.push(CommandLine {
                words,
                tokens: tokens[skip..].to_vec(),
                text: command.trim().to_string(),
            });
        }
    }
    out
}

/// Where `word` starts in `s` as a whole word (not inside `regionseek-index` or `regionseek._native`).
fn find_word(s: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find(word).map(|i| i + from) {
        let before = s[..i].chars().last();
        let after = s[i + word.len()..].chars().next();
        let edge_before = before.is_none_or(|c| c == ' ' || c == '(');
        let edge_after = after.is_none_or(|c| c == ' ');
        if edge_before && edge_after {
            return Some(i);
        }
        from = i + word.len();
    }
    None
}

/// The long flags a command line uses.
pub fn flags(line: &CommandLine) -> Vec<String> {
    line.tokens
        .iter()
        .filter_map(|t| {
            let t = t.trim_start_matches(['[', '(']);
            let name: String = t
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            (name.starts_with("--") && name.len() > 2).then_some(name)
        })
        .collect()
}

/// `(flag, value)` for each flag followed by a literal value inside brackets (`[--k 10]`, `[--size 448 --steps
/// 10]`): what a reader takes for the default. Placeholders (`N`, `DIR`), choices (`a|b`) and elisions are not
/// values.
pub fn bracketed_values(line: &CommandLine) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let tokens = &line.tokens;
    for (i, t) in tokens.iter().enumerate() {
        depth += t.matches('[').count() as i32;
        let flag = t.trim_start_matches(['[', '(']);
        if flag.starts_with("--") && depth > 0 && !flag.contains(']') {
            if let Some(v) = tokens.get(i + 1) {
                let value = v.trim_end_matches([']', ',', '.', ':', ')']);
                let placeholder = value
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '/')
                    && value.chars().any(|c| c.is_ascii_uppercase());
                let literal = !value.is_empty()
                    && !v.starts_with('-')
                    && !v.starts_with('[')
                    && !value.contains('|')
                    && !value.contains("...")
                    && !value.contains('…')
                    && !placeholder;
                if literal {
                    out.push((flag.to_string(), value.to_string()));
                }
            }
        }
        depth -= t.matches(']').count() as i32;
    }
    out
}

/// A subcommand's `--help` read as flag → default (None where it declares none).
pub fn help_defaults(help: &str) -> HashMap<String, Option<String>> {
    let mut out = HashMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let t = line.trim_start();
        let starts_option = t.starts_with('-') && line.len() - t.len() <= 6;
        if starts_option {
            let long = t
                .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '<')
                .find(|w| w.starts_with("--"))
                .map(str::to_string);
            if let Some(long) = &long {
                out.entry(long.clone()).or_insert(None);
            }
            current = long;
        }
        if let (Some(flag), Some(at)) = (&current, line.find("[default: ")) {
            let rest = &line[at + "[default: ".len()..];
            if let Some(end) = rest.find(']') {
                out.insert(flag.clone(), Some(rest[..end].to_string()));
            }
        }
    }
    out
}

/// The field names of the first `{a, b, c: {d, e}}` list after `anchor`, nested ones as `c.d`.
pub fn fields_after(text: &str, anchor: &str) -> Vec<String> {
    let at = text
        .find(anchor)
        .unwrap_or_else(|| panic!("the README no longer says {anchor:?}"));
    let rest = &text[at..];
    let open = rest.find('{').expect("a field list");
    let mut depth = 0;
    let mut end = open;
    for (i, c) in rest[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    end = open + i;
                    break;
                }
            }
            _ => {}
        }
    }
    // The first word of each entry is a field name; `name: {...}` opens nested ones; words in parentheses
    // (`index_dir (the folder's name only)`) are prose.
    let inner = &rest[open + 1..end];
    let mut out = Vec::new();
    let mut prefix: Vec<String> = Vec::new();
    let (mut expecting, mut last, mut paren) = (true, None::<String>, 0);
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '(' => paren += 1,
            ')' => paren -= 1,
            _ if paren > 0 => {}
            ',' => expecting = true,
            '{' => {
                if let Some(name) = last.take() {
                    prefix.push(name);
                }
                expecting = true;
            }
            '}' => {
                prefix.pop();
                expecting = false;
            }
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let mut word = c.to_string();
                while let Some(&n) = chars.peek() {
                    if !(n.is_ascii_alphanumeric() || n == '_') {
                        break;
                    }
                    word.push(n);
                    chars.next();
                }
                if expecting {
                    let mut full = prefix.clone();
                    full.push(word.clone());
                    out.push(full.join("."));
                    last = Some(word);
                    expecting = false;
                }
            }
            _ => {}
        }
    }
    out
}
