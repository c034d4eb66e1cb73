"""``os2d demo``: a generated shop shelf (:mod:`os2d.apps.demo.scene`) and detection of its planted products,
top-k recall, a picture and the ``os2d detect`` JSON (:mod:`os2d.apps.demo.run`)."""
