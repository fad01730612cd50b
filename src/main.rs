//! `port-agent` command line.
fn main() {
    println!("port-agent {}", env!("CARGO_PKG_VERSION"));
}
