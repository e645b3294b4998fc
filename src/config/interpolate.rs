//! `${VAR}` and `${VAR:-default}` in configuration text, like Vector and docker-compose.

/// Replace every `${VAR}` with the environment's value. `$$` is a literal `$`. A variable that is
/// unset and has no default is an error naming the line, so a typo never becomes an empty URL.
/// Comment lines (first non-blank character `#`) are left as they are.
pub(crate) fn interpolate_env(text: &str) -> Result<String, (usize, String)> {
    interpolate_with(text, |name| std::env::var(name).ok())
}

pub(crate) fn interpolate_with(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            interpolate_line(line, i + 1, &lookup, &mut out)?;
        }
    }
    Ok(out)
}

fn interpolate_line(
    text: &str,
    line: usize,
    lookup: &impl Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<(), (usize, String)> {
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or((line, "`${` without a closing `}`".to_string()))?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err((line, format!("`${{{expr}}}` is not a valid variable name")));
            }
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err((
                        line,
                        format!(
                            "environment variable `{name}` is not set (set it, or write `${{{name}:-default}}`)"
                        ),
                    ));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PW").then(|| "s3cret".to_string())
    }

    #[test]
    fn replaces_set_variables_and_defaults() {
        let got = interpolate_with("a: ${PW}\nb: ${NOPE:-x}\nc: $$HOME\nd: $5", env).unwrap();
        assert_eq!(got, "a: s3cret\nb: x\nc: $HOME\nd: $5");
    }

    #[test]
    fn unset_variable_names_its_line() {
        let err = interpolate_with("a: 1\nb: ${MISSING}\n", env).unwrap_err();
        assert_eq!(err.0, 2);
        assert!(err.1.contains("MISSING"));
    }

    #[test]
    fn comment_lines_are_left_alone() {
        let text = "# write ${VAR} for variables\na: ${PW} # ${PW}\n";
        assert_eq!(
            interpolate_with(text, env).unwrap(),
            "# write ${VAR} for variables\na: s3cret # s3cret\n"
        );
    }

    #[test]
    fn unterminated_is_an_error() {
        assert!(interpolate_with("a: ${PW", env).is_err());
    }
}
