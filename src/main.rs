use clap::Parser;

fn main() {
    let cli = kdad::cli::Cli::parse();
    if let Err(e) = kdad::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
