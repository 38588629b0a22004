fn main() -> std::process::ExitCode {
    dirbridge::cli::main()
}
