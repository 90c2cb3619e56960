"""Head-level perturbation guidance: SoftPAG on chosen (layer, head) pairs, and the HeadHunter head search."""
