// glibc's malloc was a quarter of a large sync's CPU, much of it lock contention between the
// executor and sled's threads (ARCHITECTURE.md, "Where the time goes").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    dirbridge::cli::main()
}
