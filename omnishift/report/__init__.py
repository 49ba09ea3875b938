"""Tables, figures and the HTML/Markdown report built from a run's stage outputs."""
