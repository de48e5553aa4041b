"""``micrometry serve``: a small web app for people who prefer a browser to a terminal.

FastAPI and one plain HTML page rather than Gradio: the app is two forms, so a
framework that brings hundreds of packages buys little, and owning the page lets
every bad upload get a clear message in place of a stack trace.
"""
