//! Regular expressions that Envoy (RE2) will accept.
//!
//! Checked with `regex-syntax`, the parser of the `regex` crate, whose syntax is close to RE2's:
//! both reject look-around and backreferences. What the `regex` crate adds on top of RE2 —
//! class set operations (`[a&&b]`, `--`, `~~`), nested classes, `\<`/`\>`/`\b{start}` word
//! boundaries and the `x`, `R`, `u` flags — is rejected here, so that the check does not accept
//! what Envoy would NACK. Errors carry the character offset of the offending part.

use regex_syntax::ast::{self, Ast, Visitor};

/// A problem at a character offset of the pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegexError {
    pub offset: usize,
    pub message: String,
}

/// Checks `pattern`; returns the number of capture groups (for `\N` in substitutions).
pub(crate) fn check(pattern: &str) -> Result<usize, RegexError> {
    let at = |span: &ast::Span, message: String| RegexError {
        offset: pattern[..span.start.offset].chars().count(),
        message,
    };
    let parsed = ast::parse::Parser::new()
        .parse(pattern)
        .map_err(|e| at(e.span(), format!("invalid regex: {}", e.kind())))?;
    if let Err((span, message)) = ast::visit(&parsed, Re2Only) {
        return Err(at(
            &span,
            format!("invalid regex: {message} (Envoy uses RE2)"),
        ));
    }
    regex_syntax::hir::translate::Translator::new()
        .translate(pattern, &parsed)
        .map_err(|e| at(e.span(), format!("invalid regex: {}", e.kind())))?;
    // Size limits and anything else the compiler refuses.
    let compiled = regex::Regex::new(pattern).map_err(|e| RegexError {
        offset: 0,
        message: format!(
            "invalid regex: {}",
            e.to_string().lines().last().unwrap_or_default().trim()
        ),
    })?;
    Ok(compiled.captures_len() - 1)
}

/// Checks an RE2 substitution: `\0`-`\9` refer to groups that exist, `\\` is a backslash.
pub(crate) fn check_substitution(substitution: &str, groups: usize) -> Result<(), RegexError> {
    let mut chars = substitution.chars().enumerate();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            continue;
        }
        match chars.next() {
            Some((_, '\\')) => {}
            Some((_, d)) if d.is_ascii_digit() => {
                let n = d.to_digit(10).unwrap_or(0) as usize;
                if n > groups {
                    return Err(RegexError {
                        offset: i,
                        message: format!(
                            "`\\{n}` refers to a group the regex does not have (it has {groups})"
                        ),
                    });
                }
            }
            _ => {
                return Err(RegexError {
                    offset: i,
                    message: "a `\\` in a substitution must be followed by a digit (group) or \
                              another `\\`"
                        .to_owned(),
                });
            }
        }
    }
    Ok(())
}

struct Re2Only;

impl Visitor for Re2Only {
    type Output = ();
    type Err = (ast::Span, String);

    fn finish(self) -> Result<(), Self::Err> {
        Ok(())
    }

    fn visit_pre(&mut self, node: &Ast) -> Result<(), Self::Err> {
        match node {
            Ast::Assertion(a) => match a.kind {
                ast::AssertionKind::StartLine
                | ast::AssertionKind::EndLine
                | ast::AssertionKind::StartText
                | ast::AssertionKind::EndText
                | ast::AssertionKind::WordBoundary
                | ast::AssertionKind::NotWordBoundary => Ok(()),
                _ => Err((
                    a.span,
                    "this word-boundary assertion is not supported".into(),
                )),
            },
            Ast::Flags(f) => flags(&f.flags),
            Ast::Group(g) => match &g.kind {
                ast::GroupKind::NonCapturing(f) => flags(f),
                ast::GroupKind::CaptureIndex(_) | ast::GroupKind::CaptureName { .. } => Ok(()),
            },
            _ => Ok(()),
        }
    }

    fn visit_class_set_item_pre(&mut self, item: &ast::ClassSetItem) -> Result<(), Self::Err> {
        match item {
            ast::ClassSetItem::Bracketed(b) => {
                Err((b.span, "nested character classes are not supported".into()))
            }
            _ => Ok(()),
        }
    }

    fn visit_class_set_binary_op_pre(
        &mut self,
        op: &ast::ClassSetBinaryOp,
    ) -> Result<(), Self::Err> {
        Err((
            op.span,
            "character class set operations (`&&`, `--`, `~~`) are not supported".into(),
        ))
    }
}

fn flags(flags: &ast::Flags) -> Result<(), (ast::Span, String)> {
    for item in &flags.items {
        if let ast::FlagsItemKind::Flag(
            flag @ (ast::Flag::IgnoreWhitespace | ast::Flag::CRLF | ast::Flag::Unicode),
        ) = item.kind
        {
            let letter = match flag {
                ast::Flag::IgnoreWhitespace => 'x',
                ast::Flag::CRLF => 'R',
                _ => 'u',
            };
            return Err((item.span, format!("flag `{letter}` is not supported")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(offset: usize, message: &str) -> Result<usize, RegexError> {
        Err(RegexError {
            offset,
            message: message.to_owned(),
        })
    }

    #[test]
    fn accepted() {
        assert_eq!(check(r"^/api/v[0-9]+/(orders|users)/(\d+)$"), Ok(2));
        assert_eq!(check(r"(?i)/x(?P<id>[^/]+)"), Ok(1));
        assert_eq!(check(r"\bword\B"), Ok(0));
    }

    #[test]
    fn rejected_with_offsets() {
        assert_eq!(
            check(r"/a(?=b)"),
            err(
                2,
                "invalid regex: look-around, including look-ahead and look-behind, is not supported"
            )
        );
        assert_eq!(
            check(r"(a)\1"),
            err(3, "invalid regex: backreferences are not supported")
        );
        assert_eq!(
            check(r"/x[a-z&&b]"),
            err(
                3,
                "invalid regex: character class set operations (`&&`, `--`, `~~`) are not supported (Envoy uses RE2)"
            )
        );
        assert_eq!(
            check(r"/x[a[bc]]"),
            err(
                4,
                "invalid regex: nested character classes are not supported (Envoy uses RE2)"
            )
        );
        assert_eq!(
            check(r"(?x)a b"),
            err(
                2,
                "invalid regex: flag `x` is not supported (Envoy uses RE2)"
            )
        );
        assert_eq!(
            check(r"\<word"),
            err(
                0,
                "invalid regex: this word-boundary assertion is not supported (Envoy uses RE2)"
            )
        );
        assert_eq!(
            check(r"/(unclosed"),
            err(1, "invalid regex: unclosed group")
        );
    }

    #[test]
    fn substitutions() {
        assert_eq!(check_substitution(r"/v2/\1/\2", 2), Ok(()));
        assert_eq!(check_substitution(r"\\x", 0), Ok(()));
        assert_eq!(
            check_substitution(r"/\1/\3", 2),
            Err(RegexError {
                offset: 4,
                message: "`\\3` refers to a group the regex does not have (it has 2)".into()
            })
        );
        assert_eq!(
            check_substitution(r"/\n", 2),
            Err(RegexError {
                offset: 1,
                message:
                    "a `\\` in a substitution must be followed by a digit (group) or another `\\`"
                        .into()
            })
        );
    }
}
