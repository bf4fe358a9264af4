"""The layout tier: the rules that put each mapping in a category
(``rules``, applied by the engines' ``classify``) and the facts about a
process that they take besides its mappings (``context``)."""
