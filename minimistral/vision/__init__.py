"""Paper §2, vision: the Pixtral encoder, the Mistral 3 projector, image preprocessing and the vision-language model."""
