"""Figure functions: metrics or results in, a `chart.Chart` out (drawn as a matplotlib figure for PNG/SVG, or as
a plotly figure for the page and Jupyter). Nothing here runs a model."""
