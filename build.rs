//! soko's build script has one job: depend on `protoc-bin-vendored`, so that cargo downloads
//! and unpacks it before any build script runs. cdk's gRPC build then finds that protoc
//! through `.cargo/protoc` on machines that have none installed.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if protoc_bin_vendored::protoc_bin_path().is_err() {
        println!(
            "cargo:warning=protoc-bin-vendored ships no protoc for this platform; install protoc"
        );
    }
}
