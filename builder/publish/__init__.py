"""Publish: push gated images, mirror bases, Harbor projects."""
