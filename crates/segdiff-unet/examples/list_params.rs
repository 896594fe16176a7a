//! Prints `name<TAB>[shape]` for every parameter a `config.json` asks for.
fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: list_params <config.json>");
    let cfg =
        segdiff_unet::UNet2DConfig::from_file(std::path::Path::new(&path)).unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2)
        });
    let params = segdiff_unet::expected_parameters(&cfg).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    for (name, shape) in params {
        println!("{name}\t{shape:?}");
    }
}
