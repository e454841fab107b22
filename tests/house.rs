//! The house rules of CONTRIBUTING.md, held on the source tree: no function over 150
//! lines outside the SIMD kernels; the runner, the analysis and the reports never name an
//! architecture or a quantized format; only `cli/` prints.

use std::path::{Path, PathBuf};

const LONGEST: usize = 150;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn tree(dirs: &[&str]) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for d in dirs {
        let p = root.join(d);
        if p.is_dir() {
            rust_files(&p, &mut files);
        } else {
            files.push(p);
        }
    }
    files.sort();
    files
}

/// A line without its comment and the contents of its string and char literals (so that
/// braces inside them do not count).
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_str = false;
                    out.push('"');
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push('"');
            }
            '\'' => {
                // A char literal ('{', '\n') or a lifetime ('a): skip a literal whole.
                let rest: String = chars.clone().take(3).collect();
                let mut r = rest.chars();
                match (r.next(), r.next(), r.next()) {
                    (Some('\\'), _, _) => {
                        // '\x', '\u{..}': up to the closing quote.
                        for d in chars.by_ref() {
                            if d == '\'' {
                                break;
                            }
                        }
                    }
                    (Some(_), Some('\''), _) => {
                        chars.next();
                        chars.next();
                    }
                    _ => out.push('\''),
                }
            }
            '/' if chars.peek() == Some(&'/') => break,
            _ => out.push(c),
        }
    }
    out
}

/// Every function in a file: (name, first line, lines, whether it is a
/// `#[target_feature]` kernel). Multi-line string literals are not expected to hold
/// braces that matter; raw strings are rare and brace-balanced in this tree.
fn functions(text: &str) -> Vec<(String, usize, usize, bool)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = code_of(line);
        let t = code.trim_start();
        let t = t
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("pub ")
            .trim_start_matches("const ")
            .trim_start_matches("unsafe ")
            .trim_start_matches("extern \"\" ");
        let Some(rest) = t.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let simd = lines[i.saturating_sub(4)..i]
            .iter()
            .any(|l| l.contains("target_feature"));
        let (mut depth, mut started) = (0i64, false);
        for (j, l) in lines.iter().enumerate().skip(i) {
            let c = code_of(l);
            if !started && c.trim_end().ends_with(';') && !c.contains('{') {
                break; // a declaration without a body
            }
            for ch in c.chars() {
                match ch {
                    '{' => {
                        depth += 1;
                        started = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if started && depth <= 0 {
                found.push((name.clone(), i + 1, j - i + 1, simd));
                break;
            }
        }
    }
    found
}

/// The text of a file before its test module.
fn non_test(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}

#[test]
fn no_function_is_over_150_lines_outside_the_simd_kernels() {
    let mut long = Vec::new();
    for f in tree(&["harness", "tests", "benches", "examples"]) {
        let text = std::fs::read_to_string(&f).unwrap();
        for (name, line, n, simd) in functions(&text) {
            let kernel = simd && f.components().any(|c| c.as_os_str() == "kernel");
            if n > LONGEST && !kernel {
                long.push(format!("{}:{line} {name}: {n} lines", f.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {LONGEST} lines (split them into named steps):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_counter_sees_long_functions() {
    // The rule above holds only if the counter counts: a 160-line function is found, its
    // braces in strings and chars ignored.
    let body = "    let s = \"}}}\"; let c = '{';\n".repeat(158);
    let text = format!("fn long() {{\n{body}}}\nfn short() {{}}\n");
    let f = functions(&text);
    assert_eq!(f[0], ("long".to_string(), 1, 160, false));
    assert_eq!(f[1], ("short".to_string(), 161, 1, false));
}

#[test]
fn the_runner_analysis_and_reports_never_name_an_architecture_or_a_quantized_format() {
    // They ask the registry (model::arch::ARCHITECTURES), a model's ArchConfig, or a
    // precision's WeightFormat. f32 (the reference) and native (a file as stored) are
    // what a run is compared against, not formats it measures.
    let forbidden = [
        "GgmlType::",
        "GgmlDType::",
        "gpt2::",
        "llama::",
        "arch::gpt2",
        "arch::llama",
        "format::bnb4",
        "format::int8",
        "format::ggml",
    ];
    let mut hits = Vec::new();
    for f in tree(&[
        "harness/run",
        "harness/analysis",
        "harness/report",
        "harness/record",
    ]) {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in non_test(&text).lines().enumerate() {
            let code = code_of(line);
            for w in forbidden {
                if code.contains(w) {
                    hits.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                }
            }
            if let Some(at) = code.find("Precision::") {
                let variant: String = code[at + 11..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !matches!(variant.as_str(), "F32" | "Native" | "ALL" | "") {
                    hits.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(hits.is_empty(), "named here:\n{}", hits.join("\n"));
}

#[test]
fn only_the_cli_prints() {
    let mut hits = Vec::new();
    for f in tree(&["harness"]) {
        if f.components().any(|c| c.as_os_str() == "cli") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in non_test(&text).lines().enumerate() {
            let code = code_of(line);
            if ["println!", "print!(", "eprintln!", "eprint!("]
                .iter()
                .any(|p| code.contains(p))
            {
                hits.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "printing outside cli/:\n{}",
        hits.join("\n")
    );
}
