// glibc's malloc was a quarter of a large sync's CPU, much of it lock contention between the
// executor and the store's threads (ARCHITECTURE.md, "Where the time goes").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // The allocator asks for transparent huge pages on its arenas, and a 2 MiB page is resident
    // once one byte of it is touched: at 100k users every command held 40-60 MiB more, and no
    // pass was faster. Off for this process only (and what it starts); a failure changes nothing.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    dirbridge::cli::main()
}
