//! `mistral-emulator`: serves the Mistral API emulator on 127.0.0.1 until killed.
//!
//! Prints `url: http://127.0.0.1:PORT` and `key: KEY`, then serves. `--help` lists the
//! options.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(mistral_emulator::run_cli(&args));
}
