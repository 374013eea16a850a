//! `sluice-ingester token`: make tokens for `serve --tokens-file`.
//!
//! `token new` prints a fresh random token (give it to the client) and the
//! line to add to the tokens file (only its SHA-256, so the file never holds
//! a usable secret). `token hash` turns an existing token, read from stdin,
//! into that line.

use std::io::Read;

/// `token new` or `token hash`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Print a new random token on the first line and its tokens-file line
    /// on the second.
    New {
        /// Scopes: write, query, control (comma-separated) or all.
        #[arg(long)]
        scopes: String,
        /// A name for logs (no spaces).
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Read a token from stdin and print its tokens-file line.
    Hash {
        /// Scopes: write, query, control (comma-separated) or all.
        #[arg(long)]
        scopes: String,
        /// A name for logs (no spaces).
        #[arg(long, default_value = "")]
        name: String,
    },
}

fn line(token: &str, scopes: &str, name: &str) -> anyhow::Result<String> {
    if name.chars().any(char::is_whitespace) || name.contains('#') {
        anyhow::bail!("--name must not contain spaces or `#`");
    }
    let scopes: Vec<String> = scopes
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    if scopes.is_empty() {
        anyhow::bail!("--scopes needs at least one of write, query, control, all");
    }
    for s in &scopes {
        if !matches!(s.as_str(), "write" | "query" | "control" | "all") {
            anyhow::bail!("unknown scope `{s}` (expected write, query, control or all)");
        }
    }
    let mut out = format!(
        "{} {}",
        sluice_ingester::hash_token(token),
        scopes.join(",")
    );
    if !name.is_empty() {
        out.push(' ');
        out.push_str(name);
    }
    Ok(out)
}

pub fn run_token(args: TokenArgs) -> anyhow::Result<()> {
    match args.command {
        TokenCommand::New { scopes, name } => {
            let token = sluice_ingester::new_token();
            let l = line(&token, &scopes, &name)?;
            println!("{token}");
            println!("{l}");
        }
        TokenCommand::Hash { scopes, name } => {
            let mut token = String::new();
            std::io::stdin().read_to_string(&mut token)?;
            let token = token.trim();
            if token.is_empty() {
                anyhow::bail!("no token on stdin");
            }
            println!("{}", line(token, &scopes, &name)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_have_hash_scopes_and_name() {
        assert_eq!(
            super::line("test", "write, Query", "router").expect("valid"),
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 write,query router"
        );
        assert!(super::line("t", "read", "").is_err());
        assert!(super::line("t", "write", "a b").is_err());
    }
}
