"""What a sweep writes for its user: the markdown table, the Pareto plot, the HTML page."""
