//! Writes `$OUT_DIR/snippets.rs`: one module per ```rust block of the
//! README and docs/*.md, whose async function holds the block after the
//! declarations of its `<!-- given: ... -->` comment. A block fenced with
//! attributes (`rust,ignore` and the like) is refused: every block compiles.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("..");
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    println!("cargo:rerun-if-changed={}", root.join("docs").display());

    let mut out = String::new();
    let mut index = String::from(
        "/// Where each compiled block comes from: (file, line of its fence).\npub const SNIPPETS: &[(&str, usize)] = &[\n",
    );
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
        let name = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .to_string_lossy()
            .into_owned();
        for block in blocks(file)? {
            let module = format!(
                "{}_{}",
                name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                    .to_lowercase(),
                block.line
            );
            writeln!(
                out,
                "/// {name}, line {line}.\n#[allow(unused, unreachable_code, clippy::all)]\npub mod {module} {{\n    use crate::given::*;\n    /// The block, compiled in an async function.\n    pub async fn block() -> Result<(), Box<dyn std::error::Error>> {{\n{given}\n        let _ = {{\n{code}\n        }};\n        Ok(())\n    }}\n}}",
                line = block.line,
                given = block.given,
                code = block.code,
            )?;
            writeln!(index, "    ({name:?}, {}),", block.line)?;
        }
    }
    index.push_str("];\n");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("snippets.rs"), out + &index)?;
    Ok(())
}

struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    given: String,
    code: String,
}

/// The file's ```rust blocks, each with the `given` comment right above it.
fn blocks(file: &Path) -> Result<Vec<Block>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(file)?;
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let fence = lines[i].trim_start();
        let indent = lines[i].len() - fence.len();
        if fence == "```rust" {
            let given = given_above(&lines, i);
            let mut code = String::new();
            let mut j = i + 1;
            while j < lines.len() && lines[j].trim_start() != "```" {
                code.push_str(lines[j].get(indent..).unwrap_or(lines[j].trim_start()));
                code.push('\n');
                j += 1;
            }
            blocks.push(Block {
                line: i + 1,
                given,
                code,
            });
            i = j;
        } else if fence.starts_with("```rust") {
            return Err(format!(
                "{}:{}: a ```rust block with attributes ({fence}) is not compiled; \
                 give it what it needs in a `<!-- given: ... -->` comment instead",
                file.display(),
                i + 1
            )
            .into());
        }
        i += 1;
    }
    Ok(blocks)
}

/// The declarations of a `<!-- given: ... -->` comment that ends on the
/// line above `fence` (it may span several lines), or nothing.
fn given_above(lines: &[&str], fence: usize) -> String {
    if fence == 0 || !lines[fence - 1].trim_end().ends_with("-->") {
        return String::new();
    }
    let mut start = fence - 1;
    while !lines[start].trim_start().starts_with("<!-- given:") {
        if start == 0 || lines[start].contains("<!--") {
            return String::new();
        }
        start -= 1;
    }
    let text = lines[start..fence].join("\n");
    text.trim()
        .trim_start_matches("<!-- given:")
        .trim_end_matches("-->")
        .to_string()
}
