// docs
