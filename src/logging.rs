//! tracing setup. Secrets never reach a log line: modules log ids, kinds and counts, never
//! keys, tokens, invoices' preimages, delivery codes or plaintext message bodies.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Installs the global subscriber writing to stderr.
pub fn init(config: &LogConfig) -> Result<(), String> {
    init_with_writer(config, std::io::stderr)
}

/// Installs the global subscriber writing to `writer` (tests capture logs this way).
pub fn init_with_writer<W>(config: &LogConfig, writer: W) -> Result<(), String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let mut filter = EnvFilter::try_new(&config.level).map_err(|e| e.to_string())?;
    if !config.level.contains("sled") {
        // sled logs at debug and trace from Drop impls (`dropping pagecache`) that
        // crossbeam-epoch runs from a thread-local destructor when a thread exits. The fmt
        // layer formats into a thread-local buffer that may already be destroyed then, and
        // a panic inside a thread-local destructor aborts the process ("thread local
        // panicked on drop": twice in CI, in test binaries logging everything at trace).
        // Asked for by name, sled's debug lines are still shown.
        filter = filter.add_directive(
            "sled=info"
                .parse()
                .map_err(|e: tracing_subscriber::filter::ParseError| e.to_string())?,
        );
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = if config.json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| e.to_string())
}
