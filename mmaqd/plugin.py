"""Importing this module registers mmaqd into mmdet's registries (:func:`mmaqd.register_all_modules`).

mmdet's registries import it on their first lookup once ``import mmaqd`` has named it in their locations
(:mod:`mmaqd.registration`); a config may also name it directly: ``custom_imports = dict(imports=['mmaqd.plugin'])``.
"""
from .registration import register_all_modules

register_all_modules()
