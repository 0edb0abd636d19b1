"""Headless rendering of every image and label of SPEC §3 (pyrender on EGL or OSMesa, numpy).

Import ``hoigen.render.renderer`` for the renderer (it brings in OpenCV; OpenGL is only loaded when a renderer is
created, after ``gl.select_platform`` has fixed the GL platform). ``hoigen.render.config`` is light.
"""
