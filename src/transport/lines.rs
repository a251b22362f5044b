//! Newline-delimited framing for stdio, with a size limit that skips an over-long line and
//! keeps going (a `LinesCodec` would end the stream instead).

use super::Frame;

/// Incremental decoder of newline-delimited messages.
///
/// ```
/// use stockade::transport::{lines::LineDecoder, Frame};
/// let mut d = LineDecoder::new(8);
/// let mut out = Vec::new();
/// d.push(b"{}\n\n0123456789\n[1]", &mut out);
/// d.finish(&mut out);
/// assert_eq!(out, vec![Frame::Message(b"{}".to_vec()), Frame::TooLarge, Frame::Message(b"[1]".to_vec())]);
/// ```
#[derive(Debug)]
pub struct LineDecoder {
    buf: Vec<u8>,
    max: usize,
    discarding: bool,
}

impl LineDecoder {
    /// A decoder that refuses lines longer than `max` bytes (newline excluded).
    pub fn new(max: usize) -> Self {
        LineDecoder {
            buf: Vec::new(),
            max,
            discarding: false,
        }
    }

    /// Feeds bytes; complete frames are appended to `out`. Blank lines are ignored.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Frame>) {
        while !data.is_empty() {
            let newline = data.iter().position(|&b| b == b'\n');
            let (part, rest, ends_line) = match newline {
                Some(i) => (&data[..i], &data[i + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            data = rest;
            if !self.discarding {
                if self.buf.len() + part.len() > self.max {
                    // Report as soon as the limit is crossed, then skip to the newline.
                    self.buf = Vec::new();
                    self.discarding = true;
                    out.push(Frame::TooLarge);
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            if ends_line {
                if !self.discarding {
                    self.emit(out);
                }
                self.discarding = false;
            }
        }
    }

    /// Signals end of input: a final unterminated line is still a message.
    pub fn finish(&mut self, out: &mut Vec<Frame>) {
        if !self.discarding {
            self.emit(out);
        }
        self.discarding = false;
    }

    fn emit(&mut self, out: &mut Vec<Frame>) {
        let line = std::mem::take(&mut self.buf);
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            return;
        }
        out.push(Frame::Message(line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(max: usize, pieces: &[&[u8]]) -> Vec<Frame> {
        let mut d = LineDecoder::new(max);
        let mut out = Vec::new();
        for p in pieces {
            d.push(p, &mut out);
        }
        d.finish(&mut out);
        out
    }

    #[test]
    fn splits_across_reads() {
        let out = run(100, &[b"{\"a\"", b":1}\n{", b"}\n"]);
        assert_eq!(
            out,
            vec![
                Frame::Message(b"{\"a\":1}".to_vec()),
                Frame::Message(b"{}".to_vec())
            ]
        );
    }

    #[test]
    fn oversized_line_is_skipped_once_and_next_line_survives() {
        let out = run(4, &[b"12345", b"6789", b"\nabc\n"]);
        assert_eq!(out, vec![Frame::TooLarge, Frame::Message(b"abc".to_vec())]);
    }

    #[test]
    fn exact_limit_is_accepted_and_blank_lines_ignored() {
        let out = run(4, &[b"1234\n\n \r\n"]);
        assert_eq!(out, vec![Frame::Message(b"1234".to_vec())]);
    }

    #[test]
    fn invalid_utf8_does_not_eat_the_next_line() {
        let out = run(100, &[b"\xff\xfe\n{}\n"]);
        assert_eq!(
            out,
            vec![
                Frame::Message(b"\xff\xfe".to_vec()),
                Frame::Message(b"{}".to_vec())
            ]
        );
    }
}
