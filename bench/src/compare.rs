//! `report`: turns a directory of runs (written by `scripts/bench-compare.sh`) into the
//! measured part of docs/benchmarks.md (medians, ratios, targets) and PNG charts.
//!
//! ```text
//!   DIR/meta.json                     date, commit, machine, placement, and the scenarios
//!                                     in the order to show them, with their titles
//!   DIR/<system>/<label>/r<N>.json    one run: a tachyon-bench JSON report
//! ```
//!
//! The generated text goes between `<!-- generated:begin -->` and `<!-- generated:end -->`
//! in the output file; what is outside (the hand-written analysis) is kept.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::Value;

#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    /// Directory of runs (see the module docs).
    #[arg(long)]
    pub input: PathBuf,
    /// Markdown file whose generated section is replaced.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub output: PathBuf,
    /// Directory for the PNG charts (linked relative to the markdown file).
    #[arg(long, default_value = "docs/bench")]
    pub charts: PathBuf,
    /// A TrueType font for chart text.
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    pub font: PathBuf,
}

const BEGIN: &str = "<!-- generated:begin -->";
const END: &str = "<!-- generated:end -->";

/// The systems, in table order. `tachyon-spin` is Tachyon with `shards.idle = "spin"`.
const SYSTEMS: [&str; 4] = ["tachyon", "tachyon-spin", "mosquitto", "relay"];

/// Runs by system and label.
struct Runs(BTreeMap<(String, String), Vec<Value>>);

impl Runs {
    fn load(dir: &Path) -> Result<Runs, String> {
        let mut map = BTreeMap::new();
        for sys in read_dir(dir)? {
            if !sys.is_dir() {
                continue;
            }
            let system = file_name(&sys);
            for label_dir in read_dir(&sys)? {
                let label = file_name(&label_dir);
                let mut runs = Vec::new();
                for f in read_dir(&label_dir)? {
                    if f.extension().is_some_and(|e| e == "json") {
                        let text = std::fs::read_to_string(&f)
                            .map_err(|e| format!("{}: {e}", f.display()))?;
                        match serde_json::from_str::<Value>(&text) {
                            Ok(v) => runs.push(v),
                            Err(e) => eprintln!("report: skipping {}: {e}", f.display()),
                        }
                    }
                }
                map.insert((system.clone(), label), runs);
            }
        }
        Ok(Runs(map))
    }

    /// The median over repetitions of the number at `path` (e.g. `results/latency_us/p50`).
    fn median(&self, system: &str, label: &str, path: &str) -> Option<f64> {
        let runs = self.0.get(&(system.to_owned(), label.to_owned()))?;
        median(runs.iter().filter_map(|r| lookup(r, path)).collect())
    }

    /// The sum over repetitions (loss counts).
    fn sum(&self, system: &str, label: &str, path: &str) -> Option<f64> {
        let runs = self.0.get(&(system.to_owned(), label.to_owned()))?;
        let v: Vec<f64> = runs.iter().filter_map(|r| lookup(r, path)).collect();
        (!v.is_empty()).then(|| v.iter().sum())
    }

    fn reps(&self, system: &str, label: &str) -> usize {
        self.0
            .get(&(system.to_owned(), label.to_owned()))
            .map_or(0, Vec::len)
    }
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn lookup(v: &Value, path: &str) -> Option<f64> {
    path.split('/').try_fold(v, |v, k| v.get(k))?.as_f64()
}

/// Median of `v` (mean of the middle two for an even count); `None` when empty.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// A scenario as meta.json lists it.
struct Scenario {
    label: String,
    title: String,
    qos: u64,
}

fn scenarios(meta: &Value, key: &str) -> Vec<Scenario> {
    meta[key]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| Scenario {
                    label: s["label"].as_str().unwrap_or_default().to_owned(),
                    title: s["title"].as_str().unwrap_or_default().to_owned(),
                    qos: s["qos"].as_u64().unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.round());
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{sign}{out}")
}

fn cell(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_owned(), thousands)
}

fn us(x: Option<f64>) -> String {
    match x {
        Some(v) if v < 100.0 => format!("{v:.1}"),
        Some(v) => thousands(v),
        None => "—".to_owned(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn mark(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "—",
    }
}

pub fn run(a: &ReportArgs) -> Result<(), String> {
    let meta_path = a.input.join("meta.json");
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(&meta_path)
            .map_err(|e| format!("{}: {e}", meta_path.display()))?,
    )
    .map_err(|e| format!("{}: {e}", meta_path.display()))?;
    let runs = Runs::load(&a.input)?;
    let font: &'static [u8] = Box::leak(
        std::fs::read(&a.font)
            .map_err(|e| {
                format!(
                    "{}: {e} (install Debian's fonts-dejavu-core, or pass --font)",
                    a.font.display()
                )
            })?
            .into_boxed_slice(),
    );
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| format!("{}: not a usable TrueType font", a.font.display()))?;
    std::fs::create_dir_all(&a.charts).map_err(|e| format!("{}: {e}", a.charts.display()))?;
    let chart_link = relative_link(&a.output, &a.charts);

    let mut md = String::new();
    let m = |k: &str| meta[k].as_str().unwrap_or("?").to_owned();
    let _ = writeln!(md, "{BEGIN}");
    let _ = writeln!(
        md,
        "_Generated by `tachyon-bench report` from `{}`; edit the text outside these markers._\n",
        m("command")
    );
    let _ = writeln!(md, "- Date: {}. Commit: `{}`.", m("date"), m("commit"));
    let _ = writeln!(
        md,
        "- Machine: {} ({} cores), kernel {}, loopback.",
        m("cpu_model"),
        meta["nproc"].as_u64().unwrap_or(0),
        m("kernel")
    );
    let _ = writeln!(md, "- Placement: {}.", m("placement"));
    let _ = writeln!(md, "- Systems: {}.", m("systems"));
    let _ = writeln!(
        md,
        "- Method: every figure is the median of {} repetitions; each run has {} s of warm-up \
         and a {} s window. Loss is counted exactly (every payload carries publisher id, \
         sequence and send time).",
        meta["reps"].as_u64().unwrap_or(0),
        meta["warmup_secs"].as_f64().unwrap_or(0.0),
        meta["duration_secs"].as_f64().unwrap_or(0.0)
    );

    // Throughput.
    let tp = scenarios(&meta, "throughput");
    if !tp.is_empty() {
        let _ = writeln!(md, "\n### Throughput (delivered messages per second)\n");
        let _ = writeln!(
            md,
            "Target (issue 3): QoS 0 ≥ 10x Mosquitto and ≥ 50% of the relay; QoS 1 ≥ 10x \
             Mosquitto. Lost = messages sent and never delivered, over all repetitions. \
             Where Tachyon is below 10x Mosquitto, the last column says what 10x Mosquitto \
             would be as a share of the relay: above 100% no broker can reach it on this \
             machine (*unreachable*), and the relay ratio is what is judged there.\n"
        );
        let _ = writeln!(
            md,
            "| scenario | Tachyon | Mosquitto | relay | Tachyon / Mosquitto | Tachyon / relay | \
             lost (Tachyon / Mosquitto) | target met |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|:---:|");
        let rate = "results/delivered_msgs_per_sec";
        for s in &tp {
            let t = runs.median("tachyon", &s.label, rate);
            let mq = runs.median("mosquitto", &s.label, rate);
            let r = runs.median("relay", &s.label, rate);
            let tm = ratio(t, mq);
            let tr = ratio(t, r);
            // 10x Mosquitto above the relay: beyond this machine's ceiling.
            let ceiling = matches!((mq, r), (Some(m), Some(r)) if 10.0 * m > r);
            let met = match (s.qos, tm, tr) {
                (0, Some(tm), Some(tr)) => Some((tm >= 10.0 || ceiling) && tr >= 0.5),
                (0, Some(tm), None) => Some(tm >= 10.0),
                (1, Some(tm), _) => Some(tm >= 10.0 || ceiling),
                _ => None,
            };
            let ten_x_share = match (mq, r) {
                (Some(m), Some(r)) if r > 0.0 => format!("{:.0}%", 10.0 * m / r * 100.0),
                _ => "?".to_owned(),
            };
            let verdict = match met {
                Some(true) if ceiling && tm.is_some_and(|x| x < 10.0) => {
                    format!("unreachable (10x Mosquitto = {ten_x_share} of the relay)")
                }
                Some(false) if tm.is_some_and(|x| x < 10.0) => {
                    format!("**no** (10x Mosquitto = {ten_x_share} of the relay)")
                }
                m => mark(m).to_owned(),
            };
            let lost = |sys: &str| cell(runs.sum(sys, &s.label, "results/lost"));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} / {} | {} |",
                s.title,
                cell(t),
                cell(mq),
                cell(r),
                tm.map_or("—".into(), |x| format!("{x:.1}x")),
                tr.map_or("—".into(), |x| format!("{:.0}%", x * 100.0)),
                lost("tachyon"),
                lost("mosquitto"),
                verdict
            );
        }
        for qos in [0u64, 1, 2] {
            let group: Vec<&Scenario> = tp.iter().filter(|s| s.qos == qos).collect();
            if group.is_empty() {
                continue;
            }
            let name = format!("throughput-qos{qos}.png");
            throughput_chart(&a.charts.join(&name), qos, &group, &runs)?;
            let _ = writeln!(md, "\n![QoS {qos} throughput]({chart_link}/{name})");
        }
    }

    // Latency.
    let lat = scenarios(&meta, "latency");
    if !lat.is_empty() {
        let _ = writeln!(
            md,
            "\n### Latency, open loop (µs from the scheduled send time)\n\n\
             Target (issue 3): Tachyon's p50 within 5 µs of the relay's, p99 within 1.5x the \
             relay's; busy-poll (`tachyon-spin`) p50 below blocking mode's. `lag p99` is the \
             generator's own send lag: a large value means the run measured the generator.\n"
        );
        let _ = writeln!(
            md,
            "| scenario | system | p50 | p90 | p99 | p99.9 | p99.99 | max | lag p99 | target met |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|:---:|");
        let mut charts = Vec::new();
        for s in &lat {
            let relay_p50 = runs.median("relay", &s.label, "results/latency_us/p50");
            let relay_p99 = runs.median("relay", &s.label, "results/latency_us/p99");
            let block_p50 = runs.median("tachyon", &s.label, "results/latency_us/p50");
            for sys in SYSTEMS {
                if runs.reps(sys, &s.label) == 0 {
                    continue;
                }
                let p = |k: &str| runs.median(sys, &s.label, &format!("results/latency_us/{k}"));
                let met = match sys {
                    "tachyon" | "tachyon-spin" => {
                        match (p("p50"), p("p99"), relay_p50, relay_p99) {
                            (Some(a), Some(b), Some(r50), Some(r99)) => {
                                let mut ok = a <= r50 + 5.0 && b <= 1.5 * r99;
                                if sys == "tachyon-spin" {
                                    ok &= block_p50.is_some_and(|bp| a < bp);
                                }
                                Some(ok)
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    s.title,
                    sys,
                    us(p("p50")),
                    us(p("p90")),
                    us(p("p99")),
                    us(p("p99_9")),
                    us(p("p99_99")),
                    us(p("max")),
                    us(runs.median(sys, &s.label, "results/send_lag_us/p99")),
                    mark(met)
                );
            }
            let name = format!("{}.png", s.label);
            latency_chart(&a.charts.join(&name), &s.title, &s.label, &runs)?;
            charts.push(format!("![{}]({chart_link}/{name})", s.title));
        }
        let _ = writeln!(md, "\n{}", charts.join("\n"));
    }

    // Idle connections.
    let conns = scenarios(&meta, "conns");
    if !conns.is_empty() {
        let _ = writeln!(
            md,
            "\n### Idle connections\n\nTarget (issue 3): RSS per connection ≤ Mosquitto's.\n"
        );
        let _ = writeln!(
            md,
            "| connections | Tachyon B/conn | Mosquitto B/conn | Tachyon setup/s | Mosquitto setup/s | target met |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|:---:|");
        for s in &conns {
            let per = "results/broker_rss_per_connection_bytes";
            let t = runs.median("tachyon", &s.label, per);
            let mq = runs.median("mosquitto", &s.label, per);
            let setup = "results/setup_per_sec";
            let met = match (t, mq) {
                (Some(t), Some(mq)) => Some(t <= mq),
                _ => None,
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                s.title,
                cell(t),
                cell(mq),
                cell(runs.median("tachyon", &s.label, setup)),
                cell(runs.median("mosquitto", &s.label, setup)),
                mark(met)
            );
        }
    }

    // Allocations.
    let allocs = scenarios(&meta, "allocs");
    if !allocs.is_empty() {
        let _ = writeln!(
            md,
            "\n### Heap allocations per message (broker built with `--features count-allocs`)\n\n\
             Target (issue 3): zero per message in steady-state QoS 0 forwarding.\n"
        );
        let _ = writeln!(
            md,
            "| scenario | allocations in window | per message received | per message delivered |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|");
        for s in &allocs {
            let g = |k: &str| runs.median("tachyon", &s.label, &format!("results/{k}"));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                s.title,
                cell(g("broker_allocations_in_window")),
                g("broker_allocations_per_message_sent")
                    .map_or("—".into(), |x| format!("{x:.5}")),
                g("broker_allocations_per_message_delivered")
                    .map_or("—".into(), |x| format!("{x:.5}"))
            );
        }
    }

    // The floor.
    if runs.reps("machine", "pingpong") > 0 {
        let p = |k: &str| runs.median("machine", "pingpong", &format!("results/rtt_us/{k}"));
        let _ = writeln!(
            md,
            "\n### The machine's floor\n\nTCP ping-pong over loopback (64 B, round trip, µs): \
             p50 {}, p99 {}, p99.9 {}, max {}.",
            us(p("p50")),
            us(p("p99")),
            us(p("p99_9")),
            us(p("max"))
        );
    }
    let _ = writeln!(md, "{END}");

    let old = std::fs::read_to_string(&a.output).unwrap_or_default();
    let text = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => {
            let rest = old[e + END.len()..].trim_start_matches('\n');
            let gap = if rest.is_empty() { "" } else { "\n" };
            format!("{}{}{gap}{rest}", &old[..b], md)
        }
        _ => format!("# Benchmarks\n\n{md}\n{old}"),
    };
    std::fs::write(&a.output, text).map_err(|e| format!("{}: {e}", a.output.display()))?;
    eprintln!(
        "report: wrote {} and charts in {}",
        a.output.display(),
        a.charts.display()
    );
    Ok(())
}

/// The charts directory as a link from the markdown file's directory.
fn relative_link(markdown: &Path, charts: &Path) -> String {
    let base = markdown.parent().unwrap_or(Path::new(""));
    charts
        .strip_prefix(base)
        .unwrap_or(charts)
        .to_string_lossy()
        .into_owned()
}

fn color(system: &str) -> RGBColor {
    match system {
        "tachyon" => RGBColor(0x1f, 0x77, 0xb4),
        "tachyon-spin" => RGBColor(0x17, 0xbe, 0xcf),
        "mosquitto" => RGBColor(0xd6, 0x27, 0x28),
        _ => RGBColor(0x7f, 0x7f, 0x7f),
    }
}

fn draw_err<E: std::fmt::Debug>(e: E) -> String {
    format!("chart: {e:?}")
}

/// Draws the legend and writes the file.
fn legend_and_save<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    root: &DrawingArea<DB, plotters::coord::Shift>,
    position: SeriesLabelPosition,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(position)
        .draw()
        .map_err(draw_err)?;
    root.present().map_err(draw_err)
}

/// Grouped bars, one group per scenario, log scale.
fn throughput_chart(path: &Path, qos: u64, group: &[&Scenario], runs: &Runs) -> Result<(), String> {
    let systems = ["tachyon", "mosquitto", "relay"];
    let values: Vec<Vec<Option<f64>>> = group
        .iter()
        .map(|s| {
            systems
                .iter()
                .map(|sys| runs.median(sys, &s.label, "results/delivered_msgs_per_sec"))
                .collect()
        })
        .collect();
    let max = values
        .iter()
        .flatten()
        .flatten()
        .fold(1e4f64, |m, &v| m.max(v));
    let root = BitMapBackend::new(path, (1100, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let n = group.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("QoS {qos} throughput, delivered msgs/s (median, log scale)"),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(90)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..n, (1e3f64..max * 2.0).log_scale())
        .map_err(draw_err)?;
    let titles: Vec<String> = group.iter().map(|s| s.title.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(group.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 1e-6 && i < titles.len() {
                short_title(&titles[i])
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| thousands(*y))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(draw_err)?;
    let width = 0.8 / systems.len() as f64;
    for (k, sys) in systems.iter().enumerate() {
        let bars: Vec<Rectangle<(f64, f64)>> = values
            .iter()
            .enumerate()
            .filter_map(|(i, row)| {
                row[k].map(|v| {
                    let x0 = i as f64 + 0.1 + k as f64 * width;
                    Rectangle::new([(x0, 1e3), (x0 + width * 0.95, v)], color(sys).filled())
                })
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(draw_err)?
            .label(*sys)
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 6), (x + 14, y + 6)], color(sys).filled())
            });
    }
    legend_and_save(&mut chart, &root, SeriesLabelPosition::UpperRight)
}

/// "QoS 0, fan-in 8→1, 64 B" -> "fan-in 8→1, 64 B" (the chart title has the QoS).
fn short_title(t: &str) -> String {
    t.split_once(", ").map_or(t, |(_, rest)| rest).to_owned()
}

/// Latency by percentile, one line per system, log scale.
fn latency_chart(path: &Path, title: &str, label: &str, runs: &Runs) -> Result<(), String> {
    let keys = ["p50", "p90", "p99", "p99_9", "p99_99", "max"];
    let names = ["p50", "p90", "p99", "p99.9", "p99.99", "max"];
    let lines: Vec<(&str, Vec<(f64, f64)>)> = SYSTEMS
        .iter()
        .filter_map(|sys| {
            let pts: Vec<(f64, f64)> = keys
                .iter()
                .enumerate()
                .filter_map(|(i, k)| {
                    runs.median(sys, label, &format!("results/latency_us/{k}"))
                        .map(|v| (i as f64, v.max(1.0)))
                })
                .collect();
            (!pts.is_empty()).then_some((*sys, pts))
        })
        .collect();
    let max = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, v)| v))
        .fold(10f64, f64::max);
    let root = BitMapBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{title}: latency (µs, log scale)"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.2f64..5.2, (1f64..max * 2.0).log_scale())
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| {
            let i = x.round() as usize;
            if (x - x.round()).abs() < 1e-6 && i < names.len() {
                names[i].to_owned()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| thousands(*y))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(draw_err)?;
    for (sys, pts) in lines {
        let c = color(sys);
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(draw_err)?
            .label(sys)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))
            .map_err(draw_err)?;
    }
    legend_and_save(&mut chart, &root, SeriesLabelPosition::UpperLeft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_number_formatting() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(short_title("QoS 0, fan-in 8→1, 64 B"), "fan-in 8→1, 64 B");
    }

    #[test]
    fn generated_section_replaces_only_between_markers() {
        let dir = std::env::temp_dir().join(format!("tb-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let run_dir = dir.join("runs");
        std::fs::create_dir_all(run_dir.join("tachyon/tp-a")).unwrap();
        std::fs::create_dir_all(run_dir.join("mosquitto/tp-a")).unwrap();
        for (sys, rates) in [
            ("tachyon", [300.0, 100.0, 200.0]),
            ("mosquitto", [10.0, 30.0, 20.0]),
        ] {
            for (i, r) in rates.iter().enumerate() {
                std::fs::write(
                    run_dir.join(format!("{sys}/tp-a/r{i}.json")),
                    format!(r#"{{"results": {{"delivered_msgs_per_sec": {r}, "lost": 0}}}}"#),
                )
                .unwrap();
            }
        }
        std::fs::write(
            run_dir.join("meta.json"),
            r#"{"date": "d", "commit": "c", "reps": 3,
                "throughput": [{"label": "tp-a", "title": "QoS 0, a", "qos": 0}]}"#,
        )
        .unwrap();
        let out = dir.join("bench.md");
        std::fs::write(
            &out,
            format!("# B\nkeep above\n{BEGIN}\nold\n{END}\nkeep below\n"),
        )
        .unwrap();
        let args = ReportArgs {
            input: run_dir,
            output: out.clone(),
            charts: dir.join("charts"),
            font: PathBuf::from("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
        };
        assert!(
            args.font.exists(),
            "{} missing: apt-get install fonts-dejavu-core (scripts/test.sh does)",
            args.font.display()
        );
        run(&args).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.starts_with("# B\nkeep above\n"));
        assert!(text.trim_end().ends_with("keep below"));
        assert!(!text.contains("\nold\n"));
        // Medians 200 and 20: 10.0x, target met (no relay run: the ratio to it is not judged).
        assert!(
            text.contains("| QoS 0, a | 200 | 20 | — | 10.0x | — | 0 / 0 | yes |"),
            "{text}"
        );
        assert!(dir.join("charts/throughput-qos0.png").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
