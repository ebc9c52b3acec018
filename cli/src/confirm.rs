//! Confirmation before an admin action changes the file.

use std::io::{BufRead, IsTerminal, Write};

use crate::open::Failure;

/// Asks `question` on the terminal, unless `yes`. Without a terminal to ask
/// on, refuses: a script must say `--yes`.
pub fn confirm(question: &str, yes: bool) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(format!(
            "{question} Not confirmed: pass --yes to run without a question"
        )));
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    match answer.trim() {
        "y" | "Y" | "yes" => Ok(()),
        _ => Err(Failure::new("not confirmed; nothing changed")),
    }
}
