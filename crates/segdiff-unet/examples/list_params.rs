//! Prints `name<TAB>[shape]` for every parameter a `config.json` asks for.

/// Prints `e` and its causes on one line, as anyhow's `{:#}` does, and exits with status 2.
fn fail(e: segdiff_unet::UnetError) -> ! {
    let top: &dyn std::error::Error = &e;
    let chain: Vec<String> = std::iter::successors(Some(top), |e| e.source())
        .map(|e| e.to_string())
        .collect();
    eprintln!("{}", chain.join(": "));
    std::process::exit(2)
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: list_params <config.json>");
    let cfg = segdiff_unet::UNet2DConfig::from_file(std::path::Path::new(&path))
        .unwrap_or_else(|e| fail(e));
    let params = segdiff_unet::expected_parameters(&cfg).unwrap_or_else(|e| fail(e));
    for (name, shape) in params {
        println!("{name}\t{shape:?}");
    }
}
