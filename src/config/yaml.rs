//! A small YAML tree that remembers where every key and value starts (1-based line:column).
//!
//! serde-based loading stops at the first problem and forgets positions once a value is
//! deserialized. Validation wants every problem with its position, so the text is parsed once
//! with `saphyr-parser` (a pure-Rust YAML 1.2 event parser that reports markers) into this tree,
//! and `config::check` walks it field by field. Aliases are expanded (within a node budget, so a
//! "billion laughs" file is an error, not an out-of-memory) and `<<` merge keys are applied.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// A 1-based position in the config text (columns count characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// What a node holds.
#[derive(Clone, Debug)]
pub enum Val {
    /// A scalar as written. `plain` scalars are subject to null/bool/number resolution;
    /// quoted, block and `!!str`-tagged ones are always strings.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in file order, duplicates kept (the checker reports them).
    Map(Vec<(Node, Node)>),
}

/// A YAML node and where it starts.
#[derive(Clone, Debug)]
pub struct Node {
    pub pos: Pos,
    pub val: Val,
}

impl Node {
    /// `~`, `null`, or nothing at all (`key:`), as YAML 1.2's core schema resolves them.
    pub fn is_null(&self) -> bool {
        matches!(&self.val, Val::Scalar { text, plain: true } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The scalar's text, if this is a non-null scalar.
    pub fn scalar(&self) -> Option<&str> {
        match &self.val {
            Val::Scalar { text, .. } if !self.is_null() => Some(text),
            _ => None,
        }
    }

    /// "a mapping", "a list", "null", ... for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match &self.val {
            Val::Map(_) => "a mapping",
            Val::Seq(_) => "a list",
            Val::Scalar { .. } if self.is_null() => "nothing (null)",
            Val::Scalar { text, plain: true } if matches!(text.as_str(), "true" | "false" | "True" | "False" | "TRUE" | "FALSE") => {
                "a boolean"
            }
            Val::Scalar { text, plain: true } if text.parse::<f64>().is_ok() => "a number",
            Val::Scalar { .. } => "a string",
        }
    }
}

/// Why the text is not YAML (or not a single document of it).
#[derive(Clone, Debug)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Deepest nesting accepted; configs are 4-5 levels deep, this only guards the stack.
const MAX_DEPTH: usize = 64;
/// Most nodes the tree may hold after alias expansion.
const MAX_NODES: usize = 200_000;

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: span.start.line().max(1),
        column: span.start.col() + 1,
    }
}

fn count(n: &Node) -> usize {
    match &n.val {
        Val::Scalar { .. } => 1,
        Val::Seq(v) => 1 + v.iter().map(count).sum::<usize>(),
        Val::Map(v) => 1 + v.iter().map(|(k, v)| count(k) + count(v)).sum::<usize>(),
    }
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

/// Parses `text` into one tree. `Ok(None)` for an empty document (only comments or nothing).
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    let mut nodes = 0usize;
    let err = |pos: Pos, message: String| Err(SyntaxError { pos, message });

    for item in Parser::new_from_str(text) {
        let (event, span) = match item {
            Ok(x) => x,
            Err(e) => {
                let m = e.marker();
                return err(
                    Pos {
                        line: m.line().max(1),
                        column: m.col() + 1,
                    },
                    format!("YAML syntax error: {}", e.info()),
                );
            }
        };
        let pos = pos_of(&span);
        // A finished node and the anchor it was defined with (0 = none).
        let done: Option<(Node, usize)> = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return err(pos, "only one YAML document is allowed in a config file".into());
                }
                None
            }
            Event::Scalar(text, style, anchor, tag) => {
                let tagged_str = tag.as_ref().is_some_and(|t| t.suffix == "str" || t.suffix.ends_with(":str"));
                let plain = matches!(style, ScalarStyle::Plain) && !tagged_str;
                Some((
                    Node {
                        pos,
                        val: Val::Scalar {
                            text: text.into_owned(),
                            plain,
                        },
                    },
                    anchor,
                ))
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(n) => {
                    nodes += count(n);
                    if nodes > MAX_NODES {
                        return err(pos, format!("aliases expand to more than {MAX_NODES} nodes"));
                    }
                    // The alias's own position, so problems inside point somewhere sensible.
                    let mut n = n.clone();
                    n.pos = pos;
                    Some((n, 0))
                }
                None => return err(pos, "alias refers to an unknown anchor".into()),
            },
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                });
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq { pos, anchor, items }) => Some((Node { pos, val: Val::Seq(items) }, anchor)),
                _ => return err(pos, "unbalanced sequence end".into()),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map { pos, anchor, entries, .. }) => Some((
                    Node {
                        pos,
                        val: Val::Map(merge_keys(entries)),
                    },
                    anchor,
                )),
                _ => return err(pos, "unbalanced mapping end".into()),
            },
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => None,
        };
        if stack.len() > MAX_DEPTH {
            return err(pos, format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        let Some((node, anchor)) = done else { continue };
        nodes += 1;
        if nodes > MAX_NODES {
            return err(pos, format!("more than {MAX_NODES} YAML nodes"));
        }
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
    Ok(root.filter(|r| !r.is_null()))
}

/// Applies YAML merge keys (`<<: *base` or `<<: [*a, *b]`): merged entries come after the
/// explicit ones and never override them.
fn merge_keys(entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    let is_merge = |k: &Node| matches!(&k.val, Val::Scalar { text, plain: true } if text == "<<");
    if !entries
        .iter()
        .any(|(k, v)| is_merge(k) && matches!(v.val, Val::Map(_) | Val::Seq(_)))
    {
        return entries;
    }
    let mut own = Vec::new();
    let mut merged = Vec::new();
    for (k, v) in entries {
        if !is_merge(&k) {
            own.push((k, v));
            continue;
        }
        match v.val {
            Val::Map(m) => merged.extend(m),
            Val::Seq(items) if items.iter().all(|i| matches!(i.val, Val::Map(_))) => {
                for i in items {
                    if let Val::Map(m) = i.val {
                        merged.extend(m);
                    }
                }
            }
            // Not mergeable: keep it so the checker reports `<<` as an unknown field.
            val => own.push((k, Node { pos: v.pos, val })),
        }
    }
    for (k, v) in merged {
        let present = own.iter().any(|(o, _)| o.scalar().is_some() && o.scalar() == k.scalar());
        if !present {
            own.push((k, v));
        }
    }
    own
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_get<'a>(n: &'a Node, key: &str) -> &'a Node {
        match &n.val {
            Val::Map(m) => &m.iter().find(|(k, _)| k.scalar() == Some(key)).unwrap().1,
            _ => panic!("not a map"),
        }
    }

    #[test]
    fn positions_are_one_based() {
        let t = "a: 1\nlist:\n  - name: x\n    kind: tcp\n";
        let root = parse(t).unwrap().unwrap();
        assert_eq!(root.pos, Pos { line: 1, column: 1 });
        assert_eq!(map_get(&root, "a").pos, Pos { line: 1, column: 4 });
        let Val::Seq(items) = &map_get(&root, "list").val else { panic!() };
        assert_eq!(items[0].pos, Pos { line: 3, column: 5 });
        assert_eq!(map_get(&items[0], "kind").pos, Pos { line: 4, column: 11 });
    }

    #[test]
    fn aliases_and_merge_keys() {
        let t = "base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n";
        let root = parse(t).unwrap().unwrap();
        let u = map_get(&root, "use");
        assert_eq!(map_get(u, "x").scalar(), Some("1"));
        assert_eq!(map_get(u, "y").scalar(), Some("3"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        // The unclosed `[` swallows line 2 until the `:` of `b:`, which cannot be in a flow list.
        assert_eq!((e.pos.line, e.pos.column), (2, 2), "{e:?}");
        assert!(e.message.contains("':'"), "{e:?}");
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(e.pos.line, 2);
        assert!(parse("# only a comment\n").unwrap().is_none());
    }

    #[test]
    fn billion_laughs_is_bounded() {
        let mut t = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            t.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(parse(&t).is_err());
        assert!(parse(&"[".repeat(10_000)).is_err());
    }
}
