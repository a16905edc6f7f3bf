fn main() {
    println!("kdad {}", env!("CARGO_PKG_VERSION"));
}
