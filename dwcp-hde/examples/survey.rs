//! `cargo run --release -p dwcp-hde --example survey -- IMAGE [PREVIOUS] [DICT_PAGES]`:
//! the `dwcp-agent hde stats` table without building the agent.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let image = args
        .next()
        .ok_or("usage: survey IMAGE [PREVIOUS] [DICT_PAGES]")?;
    let previous = args.next().filter(|p| p != "-").map(Into::into);
    let dict_sample_pages = match args.next() {
        Some(n) => n.parse()?,
        None => dwcp_hde::HdeConfig::default().dict_sample_pages,
    };
    let survey = dwcp_hde::survey::run(&dwcp_hde::survey::SurveyOptions {
        image: image.into(),
        previous,
        block_bytes: 1 << 20,
        link_bits: vec![1e9, 10e9, 25e9],
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        zstd_level: 1,
        dict_sample_pages,
        all_levels_only: false,
    })?;
    print!("{}", dwcp_hde::survey::render(&survey));
    Ok(())
}
