//! Every ```rust block of the README and docs/*.md is among the compiled
//! ones: counted here from the files themselves, independently of build.rs.

use std::path::Path;

#[test]
fn every_rust_block_is_compiled() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "md") {
            files.push(path);
        }
    }
    let mut in_files = 0;
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        in_files += text
            .lines()
            .filter(|line| line.trim_start().starts_with("```rust"))
            .count();
    }
    assert!(
        in_files >= 10,
        "only {in_files} Rust blocks found: is the README where it was?"
    );
    assert_eq!(idemkv_snippets::SNIPPETS.len(), in_files);
    let readme = idemkv_snippets::SNIPPETS
        .iter()
        .filter(|(file, _)| *file == "README.md")
        .count();
    assert!(readme >= 4, "the README's blocks are compiled ({readme})");
    Ok(())
}
