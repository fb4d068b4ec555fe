"""Files shipped with the tool: compatibility data, templates, the in-image smoke suite."""
