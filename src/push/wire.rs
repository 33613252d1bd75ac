//! remote_write 1.0 on the wire: the families `/metrics` serves → samples → a protobuf
//! `WriteRequest`, snappy *block* compressed.
//!
//! The protobuf messages are written by hand with `prost` derives (the four messages of
//! `prometheus/prompb/{remote,types}.proto` we use; field numbers as there), so no `protoc` is
//! needed to build. Histograms become the classic `_bucket{le}` / `_sum` / `_count` series,
//! with `le` formatted exactly as the text exposition does (`0.005`, `1`, `+Inf`), so a pushed
//! series and a scraped one are the same series. Labels are sorted by name (`__name__` first,
//! as the byte order puts it), external labels added unless the series has that label already.
//!
//! Label sets are interned ([`Interner`]): a queue of a hundred thousand samples holds each
//! distinct series' labels once, and a batch groups samples per series by pointer.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use prometheus::proto::{MetricFamily, MetricType};

/// `prometheus.WriteRequest` (remote.proto): field 1 `timeseries`. Field 3 (metadata) is not
/// sent; remote_write 1.0 receivers do not need it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries` (types.proto): labels sorted by name, samples in time order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`: value and Unix time in milliseconds.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// One series: its sorted labels and those labels already protobuf-encoded (the `labels`
/// fields of a `TimeSeries`), shared by every queued sample of it, so a request is built by
/// copying bytes rather than re-encoding strings.
#[derive(Debug, PartialEq)]
pub struct SeriesData {
    pub labels: Vec<Label>,
    encoded: Vec<u8>,
}

impl SeriesData {
    pub fn new(labels: Vec<Label>) -> SeriesData {
        let mut encoded = Vec::new();
        for l in &labels {
            prost::encoding::message::encode(1, l, &mut encoded);
        }
        SeriesData { labels, encoded }
    }
}

/// A shared [`SeriesData`].
pub type Series = Arc<SeriesData>;

/// Every sample of one gather, all at the same timestamp.
#[derive(Debug)]
pub struct Snapshot {
    /// Unix time in milliseconds.
    pub timestamp_ms: i64,
    pub samples: Vec<(Series, f64)>,
}

/// Hands out one shared [`Series`] per distinct label set. A series is found by a 64-bit
/// fingerprint of its *inputs* (metric name, suffix, labels, `le`) and then compared label by
/// label, so the usual gather (the same series as last time) allocates nothing per sample.
/// Only the series seen in the latest gather are kept, so series that disappear do not pile up.
#[derive(Default)]
pub struct Interner {
    known: HashMap<u64, Series>,
}

/// What one sample's series is made of, borrowed from the gathered family.
struct SeriesKey<'a> {
    name: &'a str,
    suffix: &'a str,
    base: &'a [(&'a str, &'a str)],
    extra: Option<(&'a str, &'a str)>,
    external: &'a BTreeMap<String, String>,
}

impl SeriesKey<'_> {
    fn own(&self) -> impl Iterator<Item = (&str, &str)> {
        self.base.iter().copied().chain(self.extra).filter(|(_, v)| !v.is_empty())
    }

    fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.name, self.suffix).hash(&mut h);
        for (n, v) in self.own() {
            (n, v).hash(&mut h);
        }
        h.finish()
    }

    /// Whether `s` is exactly the label set [`label_set`] would build from this key.
    fn matches(&self, s: &SeriesData) -> bool {
        let find = |n: &str| {
            s.labels
                .binary_search_by(|l| l.name.as_str().cmp(n))
                .ok()
                .map(|i| s.labels[i].value.as_str())
        };
        let Some(metric) = find("__name__") else { return false };
        if metric.strip_prefix(self.name) != Some(self.suffix) {
            return false;
        }
        let mut count = 1;
        for (n, v) in self.own() {
            if find(n) != Some(v) {
                return false;
            }
            count += 1;
        }
        for (n, v) in self.external {
            if self.own().any(|(o, _)| o == n) || n == "__name__" {
                continue;
            }
            if find(n) != Some(v.as_str()) {
                return false;
            }
            count += 1;
        }
        count == s.labels.len()
    }
}

impl Interner {
    fn take(&mut self, next: &mut HashMap<u64, Series>, key: &SeriesKey<'_>) -> Series {
        let fp = key.fingerprint();
        if let Some(s) = next.get(&fp).or_else(|| self.known.get(&fp)) {
            if key.matches(s) {
                let s = s.clone();
                next.insert(fp, s.clone());
                return s;
            }
        }
        // New (or, once in 2^64, a fingerprint collision: then built fresh every time).
        let s = Series::new(SeriesData::new(label_set(key)));
        next.insert(fp, s.clone());
        s
    }
}

/// Turns gathered families into one [`Snapshot`] at `timestamp_ms`, adding `external` labels.
pub fn snapshot(families: &[MetricFamily], external: &BTreeMap<String, String>, timestamp_ms: i64, interner: &mut Interner) -> Snapshot {
    let mut next = HashMap::with_capacity(interner.known.len());
    let mut samples = Vec::new();
    for family in families {
        let name = family.name();
        for m in family.get_metric() {
            let base: Vec<(&str, &str)> = m.get_label().iter().map(|l| (l.name(), l.value())).collect();
            let mut add = |suffix: &str, extra: Option<(&str, &str)>, value: f64| {
                let key = SeriesKey {
                    name,
                    suffix,
                    base: &base,
                    extra,
                    external,
                };
                samples.push((interner.take(&mut next, &key), value));
            };
            match family.get_field_type() {
                MetricType::COUNTER => add("", None, m.get_counter().get_value()),
                MetricType::GAUGE => add("", None, m.get_gauge().get_value()),
                // The crate's own collectors never produce untyped families.
                MetricType::UNTYPED => {}
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    let mut saw_inf = false;
                    for b in h.get_bucket() {
                        let le = b.upper_bound();
                        saw_inf |= le.is_infinite();
                        let le = if le.is_infinite() { "+Inf".to_string() } else { le.to_string() };
                        add("_bucket", Some(("le", &le)), b.cumulative_count() as f64);
                    }
                    if !saw_inf {
                        add("_bucket", Some(("le", "+Inf")), h.get_sample_count() as f64);
                    }
                    add("_sum", None, h.get_sample_sum());
                    add("_count", None, h.get_sample_count() as f64);
                }
                MetricType::SUMMARY => {
                    let s = m.get_summary();
                    for q in s.get_quantile() {
                        let quantile = q.quantile().to_string();
                        add("", Some(("quantile", &quantile)), q.value());
                    }
                    add("_sum", None, s.sample_sum());
                    add("_count", None, s.sample_count() as f64);
                }
            }
        }
    }
    interner.known = next;
    Snapshot { timestamp_ms, samples }
}

/// `__name__` plus the metric's non-empty labels plus `extra` (`le`), external labels filling
/// in the names the series does not have; sorted by name (byte order, as Prometheus sorts).
/// An empty value means "no such label" in Prometheus (a scrape drops it too).
fn label_set(key: &SeriesKey<'_>) -> Vec<Label> {
    let mut labels: Vec<Label> = Vec::with_capacity(key.base.len() + key.external.len() + 2);
    labels.push(Label {
        name: "__name__".into(),
        value: format!("{}{}", key.name, key.suffix),
    });
    for (n, v) in key.own() {
        labels.push(Label {
            name: n.into(),
            value: v.into(),
        });
    }
    for (n, v) in key.external {
        if !labels.iter().any(|l| &l.name == n) {
            labels.push(Label {
                name: n.clone(),
                value: v.clone(),
            });
        }
    }
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    labels
}

/// Builds the request for `snapshots` (oldest first): one `TimeSeries` per distinct series,
/// its samples in time order. (The struct form, for tests and readers; [`encode_batch`] writes
/// the same bytes without building it.)
pub fn write_request<'a>(snapshots: impl IntoIterator<Item = &'a Snapshot>) -> WriteRequest {
    let timeseries = group(snapshots)
        .into_iter()
        .map(|(series, samples)| TimeSeries {
            labels: series.labels.clone(),
            samples,
        })
        .collect();
    WriteRequest { timeseries }
}

/// Samples per series, series in first-seen order, samples in time order.
fn group<'a>(snapshots: impl IntoIterator<Item = &'a Snapshot>) -> Vec<(&'a Series, Vec<Sample>)> {
    let mut index: HashMap<*const SeriesData, usize> = HashMap::new();
    let mut out: Vec<(&'a Series, Vec<Sample>)> = Vec::new();
    for snap in snapshots {
        for (series, value) in &snap.samples {
            let sample = Sample {
                value: *value,
                timestamp: snap.timestamp_ms,
            };
            match index.get(&Arc::as_ptr(series)) {
                Some(&i) => out[i].1.push(sample),
                None => {
                    index.insert(Arc::as_ptr(series), out.len());
                    out.push((series, vec![sample]));
                }
            }
        }
    }
    out
}

/// The HTTP body for `snapshots`: the protobuf `WriteRequest` written from the series'
/// pre-encoded labels, snappy-compressed (block format).
pub fn encode_batch<'a>(snapshots: impl IntoIterator<Item = &'a Snapshot>) -> Result<Vec<u8>, snap::Error> {
    use prost::encoding::{encode_key, encode_varint, message, WireType};
    let groups = group(snapshots);
    let mut raw = Vec::with_capacity(groups.iter().map(|(s, v)| s.encoded.len() + v.len() * 20 + 8).sum());
    for (series, samples) in &groups {
        let samples_len: usize = samples.iter().map(|x| message::encoded_len(2, x)).sum();
        let len = series.encoded.len() + samples_len;
        encode_key(1, WireType::LengthDelimited, &mut raw);
        encode_varint(len as u64, &mut raw);
        raw.extend_from_slice(&series.encoded);
        for x in samples {
            message::encode(2, x, &mut raw);
        }
    }
    snap::raw::Encoder::new().compress_vec(&raw)
}

/// Protobuf-encodes and snappy-compresses (block format) a request built as a struct.
pub fn encode(request: &WriteRequest) -> Result<Vec<u8>, snap::Error> {
    let raw = prost::Message::encode_to_vec(request);
    snap::raw::Encoder::new().compress_vec(&raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

    fn registry() -> Registry {
        let r = Registry::new();
        let c = IntCounterVec::new(Opts::new("runs_total", "h"), &["probe", "zone", "team"]).unwrap();
        r.register(Box::new(c.clone())).unwrap();
        c.with_label_values(&["a", "z1", ""]).inc_by(3);
        let h = HistogramVec::new(HistogramOpts::new("dur_seconds", "h").buckets(vec![0.005, 1.0]), &["probe"]).unwrap();
        r.register(Box::new(h.clone())).unwrap();
        h.with_label_values(&["a"]).observe(0.5);
        r
    }

    fn names(labels: &[Label]) -> Vec<String> {
        labels.iter().map(|l| format!("{}={}", l.name, l.value)).collect()
    }

    #[test]
    fn histograms_become_bucket_sum_count_with_text_format_le() {
        let ext = BTreeMap::from([("site".to_string(), "paris".to_string()), ("zone".to_string(), "ext".to_string())]);
        let snap = snapshot(&registry().gather(), &ext, 1000, &mut Interner::default());
        let all: Vec<(Vec<String>, f64)> = snap.samples.iter().map(|(s, v)| (names(&s.labels), *v)).collect();
        let find = |want: &[&str]| {
            all.iter()
                .find(|(l, _)| l.iter().map(String::as_str).eq(want.iter().copied()))
                .map(|(_, v)| *v)
        };
        assert_eq!(
            find(&["__name__=dur_seconds_bucket", "le=0.005", "probe=a", "site=paris", "zone=ext"]),
            Some(0.0)
        );
        assert_eq!(
            find(&["__name__=dur_seconds_bucket", "le=1", "probe=a", "site=paris", "zone=ext"]),
            Some(1.0)
        );
        assert_eq!(
            find(&["__name__=dur_seconds_bucket", "le=+Inf", "probe=a", "site=paris", "zone=ext"]),
            Some(1.0)
        );
        assert_eq!(find(&["__name__=dur_seconds_sum", "probe=a", "site=paris", "zone=ext"]), Some(0.5));
        assert_eq!(
            find(&["__name__=dur_seconds_count", "probe=a", "site=paris", "zone=ext"]),
            Some(1.0)
        );
        // The series' own `zone` wins over the external label of the same name; the empty
        // `team` is no label at all.
        assert_eq!(find(&["__name__=runs_total", "probe=a", "site=paris", "zone=z1"]), Some(3.0));
        assert_eq!(all.len(), 6);
    }

    #[test]
    fn a_batch_groups_samples_per_series_in_time_order_and_round_trips() {
        let reg = registry();
        let mut interner = Interner::default();
        let s1 = snapshot(&reg.gather(), &BTreeMap::new(), 1000, &mut interner);
        let s2 = snapshot(&reg.gather(), &BTreeMap::new(), 2000, &mut interner);
        let req = write_request([&s1, &s2]);
        assert_eq!(req.timeseries.len(), 6);
        for ts in &req.timeseries {
            let times: Vec<i64> = ts.samples.iter().map(|s| s.timestamp).collect();
            assert_eq!(times, vec![1000, 2000]);
            assert!(ts.labels.windows(2).all(|w| w[0].name < w[1].name), "labels sorted");
        }
        let body = encode_batch([&s1, &s2]).unwrap();
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let back: WriteRequest = prost::Message::decode(raw.as_slice()).unwrap();
        assert_eq!(back, req, "the byte-level encoder writes the same message");
        assert_eq!(body, encode(&req).unwrap());
        // The second gather reused the first one's series (no new allocation per sample).
        assert!(s1.samples.iter().zip(&s2.samples).all(|(a, b)| Arc::ptr_eq(&a.0, &b.0)));
    }
}
