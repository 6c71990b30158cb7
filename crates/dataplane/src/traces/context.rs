//! W3C trace context (`traceparent`) and the sampling decision (pure).

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The caller's span, as its `traceparent` named it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

/// `00-<trace id>-<parent span id>-<flags>`; None for anything else (or all-zero ids), as the
/// W3C recommendation says: a malformed header starts a new trace.
pub fn parse_traceparent(header: &str) -> Option<Parent> {
    let mut parts = header.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let trace_id: TraceId = unhex(trace)?;
    let span_id: SpanId = unhex(span)?;
    let flags: [u8; 1] = unhex(flags)?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags[0] & 1 == 1,
    })
}

pub fn traceparent(trace_id: &TraceId, span_id: &SpanId) -> String {
    format!("00-{}-{}-01", hex(trace_id), hex(span_id))
}

pub fn hex_id(bytes: &[u8]) -> String {
    hex(bytes)
}

/// Parent-based ratio sampling: the caller's decision when it made one, else `ratio` of new
/// traces (by the trace id, as OpenTelemetry's TraceIdRatioBased does).
pub fn sampled(parent: Option<&Parent>, trace_id: &TraceId, ratio: f64) -> bool {
    match parent {
        Some(parent) => parent.sampled,
        None => {
            let low = u64::from_be_bytes(trace_id[8..].try_into().expect("eight bytes"));
            ratio >= 1.0 || (low >> 1) < ((ratio.max(0.0) * (1u64 << 63) as f64) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_round_trip_and_malformed_ones_are_ignored() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = parse_traceparent(header).unwrap();
        assert!(parent.sampled);
        assert_eq!(traceparent(&parent.trace_id, &parent.span_id), header);
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        assert!(
            !parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .unwrap()
                .sampled
        );
    }

    #[test]
    fn the_callers_decision_wins_and_new_traces_follow_the_ratio() {
        let unsampled = Parent {
            trace_id: [1; 16],
            span_id: [1; 8],
            sampled: false,
        };
        assert!(!sampled(Some(&unsampled), &[0; 16], 1.0));
        assert!(sampled(None, &[0xff; 16], 1.0));
        assert!(!sampled(None, &[0; 16], 0.0));
        let drawn = (0..1000u32)
            .filter(|i| {
                let mut id = [0u8; 16];
                id[8..12].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
                sampled(None, &id, 0.25)
            })
            .count();
        assert!((150..350).contains(&drawn), "{drawn}");
    }
}
