//! The label selector lexer and recursive-descent parser, token for token the one in
//! `k8s.io/apimachinery/pkg/labels/selector.go`, so that the same strings are accepted
//! and the same error messages come back.
//!
//! Grammar:
//! ```text
//! selector    ::= requirement | requirement "," selector
//! requirement ::= ["!"] KEY [ ("in" | "notin") "(" values ")" | ("=" | "==" | "!=" | ">" | "<") VALUE ]
//! ```
//! `in` and `notin` are keywords only where an operator is expected, so they can be keys
//! and values too.

use std::collections::BTreeSet;

use super::SelectorError;
use super::label::{Operator, Requirement, label_key_error};
use crate::field::FieldPath;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

/// Whether `in`/`notin` are read as keywords (operator position) or as identifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

fn keyword(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "in" => Token::In,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "notin" => Token::NotIn,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits the input into tokens; identifiers run until whitespace or a special symbol,
/// operators are the longest run of special symbols that forms a known operator.
fn lex(s: &str) -> Vec<(Token, String)> {
    let b = s.as_bytes();
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while pos < b.len() && is_whitespace(b[pos]) {
            pos += 1;
        }
        if pos >= b.len() {
            out.push((Token::EndOfString, String::new()));
            return out;
        }
        let start = pos;
        if is_special(b[pos]) {
            // Every single special symbol is a token, so this always finds one.
            let mut best = (Token::Comma, pos);
            while pos < b.len() && is_special(b[pos]) {
                match keyword(&s[start..=pos]) {
                    Some(t) => best = (t, pos + 1),
                    None => break,
                }
                pos += 1;
            }
            pos = best.1;
            out.push((best.0, s[start..pos].to_string()));
        } else {
            while pos < b.len() && !is_special(b[pos]) && !is_whitespace(b[pos]) {
                pos += 1;
            }
            let literal = &s[start..pos];
            out.push((
                keyword(literal).unwrap_or(Token::Identifier),
                literal.to_string(),
            ));
        }
    }
}

struct Parser {
    items: Vec<(Token, String)>,
    position: usize,
}

impl Parser {
    fn item(&self, at: usize, context: Context) -> (Token, String) {
        let (tok, lit) = self
            .items
            .get(at)
            .cloned()
            .unwrap_or((Token::EndOfString, String::new()));
        let tok = match (context, tok) {
            (Context::Values, Token::In | Token::NotIn) => Token::Identifier,
            _ => tok,
        };
        (tok, lit)
    }

    fn lookahead(&self, context: Context) -> (Token, String) {
        self.item(self.position, context)
    }

    fn consume(&mut self, context: Context) -> (Token, String) {
        let item = self.item(self.position, context);
        self.position += 1;
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Context::Values);
            match tok {
                Token::Identifier | Token::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(r);
                    let (t, l) = self.consume(Context::Values);
                    match t {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (t2, l2) = self.lookahead(Context::Values);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        if let Some(op) = inferred {
            return Requirement::new(&key, op, Vec::new()).map_err(|e| e.to_string());
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(&key, operator, values.into_iter().collect()).map_err(|e| e.to_string())
    }

    /// Reads `[!]KEY`; infers Exists/DoesNotExist when no operator follows.
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let (mut tok, mut literal) = self.consume(Context::Values);
        let negated = tok == Token::DoesNotExist;
        if negated {
            (tok, literal) = self.consume(Context::Values);
        }
        if tok != Token::Identifier {
            return Err(format!("found '{literal}', expected: identifier"));
        }
        if let Some(e) = label_key_error(&literal, &FieldPath::root()) {
            return Err(e.to_string());
        }
        let (next, _) = self.lookahead(Context::Values);
        let operator = if negated {
            Some(Operator::DoesNotExist)
        } else if matches!(next, Token::EndOfString | Token::Comma) {
            Some(Operator::Exists)
        } else {
            None
        };
        Ok((literal, operator))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (tok, lit) = self.consume(Context::KeyAndOperator);
        Ok(match tok {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        })
    }

    /// Reads `( values )`; `()` is the set holding the empty string.
    fn parse_values(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, lit) = self.consume(Context::Values);
        if tok != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Context::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let set = self.parse_identifiers_list()?;
                let (tok, _) = self.consume(Context::Values);
                if tok != Token::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(set)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    /// Reads a comma-separated list of possibly empty identifiers, up to (not including) `)`.
    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>, String> {
        let mut set = BTreeSet::new();
        loop {
            let (tok, lit) = self.consume(Context::Values);
            match tok {
                Token::Identifier => {
                    set.insert(lit);
                    let (tok2, lit2) = self.lookahead(Context::Values);
                    match tok2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(set),
                        _ => return Err(format!("found '{lit2}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    let (tok2, _) = self.lookahead(Context::Values);
                    if tok2 == Token::ClosedPar {
                        set.insert(String::new());
                        return Ok(set);
                    }
                    if tok2 == Token::Comma {
                        self.consume(Context::Values);
                        set.insert(String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    /// Reads the single value of `=`, `==`, `!=`, `>`, `<`; nothing means the empty value.
    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, _) = self.lookahead(Context::Values);
        if matches!(tok, Token::EndOfString | Token::Comma) {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (tok, lit) = self.consume(Context::Values);
        if tok == Token::Identifier {
            Ok(BTreeSet::from([lit]))
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

/// Parses a label selector string into its requirements (in input order).
pub(super) fn parse(selector: &str) -> Result<Vec<Requirement>, SelectorError> {
    let mut parser = Parser {
        items: lex(selector),
        position: 0,
    };
    parser.parse().map_err(SelectorError::Label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        match parse(s) {
            Ok(r) => panic!("{s} parsed as {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn ok(s: &str) -> Vec<String> {
        match parse(s) {
            Ok(r) => r.iter().map(ToString::to_string).collect(),
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn lexes_operators_greedily_and_keywords_as_tokens() {
        let toks: Vec<Token> = lex("a!=b,c in (d),!e==f")
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        use Token::*;
        assert_eq!(
            toks,
            vec![
                Identifier,
                NotEquals,
                Identifier,
                Comma,
                Identifier,
                In,
                OpenPar,
                Identifier,
                ClosedPar,
                Comma,
                DoesNotExist,
                Identifier,
                DoubleEquals,
                Identifier,
                EndOfString
            ]
        );
        let toks: Vec<String> = lex("a=!b").into_iter().map(|(_, l)| l).collect();
        assert_eq!(toks, vec!["a", "=", "!", "b", ""]);
    }

    #[test]
    fn parses_every_requirement_form_with_whitespace() {
        assert_eq!(ok(" a = b , c==d,e != f "), vec!["a=b", "c==d", "e!=f"]);
        assert_eq!(
            ok("x in (foo,,baz),y,z notin ()"),
            vec!["x in (,baz,foo)", "y", "z notin ()"]
        );
        assert_eq!(ok("!a, b"), vec!["!a", "b"]);
        assert_eq!(ok("a="), vec!["a="]);
        assert_eq!(ok("a=,b"), vec!["a=", "b"]);
        assert_eq!(ok("in in (in,notin)"), vec!["in in (in,notin)"]);
        assert_eq!(ok("n>1,m<2"), vec!["n>1", "m<2"]);
        assert_eq!(ok("x in (a,)"), vec!["x in (,a)"]);
        assert!(ok("").is_empty());
    }

    #[test]
    fn reports_syntax_errors_like_kubernetes() {
        assert_eq!(err("a=b c"), "found 'c', expected: ',' or 'end of string'");
        assert_eq!(
            err("a b"),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(err("a=b,"), "found '', expected: identifier after ','");
        assert_eq!(
            err(",a"),
            "found ',', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            err("a in b"),
            "unable to parse requirement: found 'b' expected: '('"
        );
        assert_eq!(
            err("a in (b"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            err("a in (=)"),
            "unable to parse requirement: found '=', expected: ',', ')' or identifier"
        );
        assert_eq!(
            err("a in (b,=)"),
            "unable to parse requirement: found '=', expected: ',', or identifier"
        );
        assert_eq!(
            err("a=(b)"),
            "unable to parse requirement: found '(', expected: identifier"
        );
        assert_eq!(
            err("! =a"),
            "unable to parse requirement: found '=', expected: identifier"
        );
        assert_eq!(
            err("!=a"),
            "found '!=', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            err("a notin"),
            "unable to parse requirement: found '' expected: '('"
        );
        assert_eq!(
            err("a (b)"),
            "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt"
        );
    }

    #[test]
    fn validates_keys_and_values() {
        let e = err("a$=b");
        assert!(e.starts_with("unable to parse requirement: <nil>: Invalid value: \"a$\": name part must consist of"), "{e}");
        let e = err("a=b$");
        assert!(
            e.starts_with(
                "unable to parse requirement: values[0][a]: Invalid value: \"b$\": a valid label"
            ),
            "{e}"
        );
        let e = err("n>x");
        assert_eq!(
            e,
            "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
    }
}
