"""The sample recipe: object -> grasp -> trajectory -> camera (-> render -> write, in ``hoigen synth``)."""
