"""One module per command: each is a thin Typer wrapper that parses, calls one plain function from
the core, and renders. Core modules are imported inside the functions so that `tokenize` never
pays for importing torch."""
