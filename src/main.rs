// glibc's malloc was a quarter of a large sync's CPU: its arena locks contend between the
// executor and sled's threads, and the heap it leaves after a large read fragments (see
// ARCHITECTURE.md, "Memory").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    dirbridge::cli::main()
}
