"""Whole emails in, tracked emails out (issue #15): compile an email once, render it per recipient.

    compiled = compile_email(html, text, RewriteOptions.parse(options), own_prefixes=("https://t.example/c/",))
    rendered = compiled.render(signer, "spring-sale", "r-42")

tokenize.py finds spans in linear time, attrs.py decodes attribute values as browsers do,
links.py decides which URLs are tracked, html.py and text.py plan each part, template.py keeps
the compiled chunks and renders, options.py checks the options.
"""

from app.rewrite.options import OptionsError, RewriteOptions
from app.rewrite.template import CompiledEmail, Rendered, RenderedLink, Signer, Skipped, compile_email

__all__ = [
    "CompiledEmail", "OptionsError", "Rendered", "RenderedLink", "RewriteOptions", "Signer", "Skipped", "compile_email",
]  # fmt: skip
